//! The per-request lookup of a token's facts, in one read: the denylist, the
//! session and the user with their global-logout mark ([`facts`]); and the
//! answers remembered while the database provably has not changed
//! ([`LookupCache`], keyed on a [`Version`] from [`super::changes`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::changes::Version;
use super::denylist::{Denylist, View};
use super::{sessions, users};
use crate::store::{Lookup, LookupKey, StoreError};

/// Reads everything the token check needs about `key`, on one connection
/// (inside one read transaction when the reader batches, or inside the
/// writer's batch: `view` says which).
pub fn facts(
    conn: &Connection,
    key: &LookupKey,
    denylist: &Denylist,
    view: View<'_>,
) -> Result<Lookup, StoreError> {
    // A reader catches up with the log once for both checks.
    let snapshot;
    let view = match view {
        View::Committed => {
            snapshot = denylist.snapshot(conn)?;
            View::Snapshot(&snapshot)
        }
        other => other,
    };
    let revoked = denylist.is_revoked(conn, &key.jti, view)?;
    let session = match &key.sid {
        Some(sid) => sessions::state(conn, sessions::Ends { denylist, view }, sid)?,
        None => None,
    };
    let user = users::find_facts(conn, key.user_id)?.map(Arc::new);
    Ok(Lookup {
        revoked,
        session,
        user,
    })
}

/// Shards of the cache: requests on different threads rarely meet on a lock.
const SHARDS: usize = 16;

/// Lookup answers remembered per `jti` together with the database version
/// they were computed at; a different version makes them worthless.
pub struct LookupCache {
    shards: Vec<Mutex<HashMap<String, (Version, Lookup)>>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl LookupCache {
    /// A cache of at most about `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        }
    }

    fn shard(&self, jti: &str) -> &Mutex<HashMap<String, (Version, Lookup)>> {
        &self.shards[self.hasher.hash_one(jti) as usize % SHARDS]
    }

    /// The answer for `jti` if it was computed at `version`. A remembered
    /// revocation counts whatever the version: a revocation never goes away
    /// while its token can still verify.
    pub fn get(&self, version: Version, jti: &str) -> Option<Lookup> {
        let entries = self.shard(jti).lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(jti) {
            Some((v, lookup)) if *v == version || lookup.revoked => Some(lookup.clone()),
            _ => None,
        }
    }

    /// Remembers an answer computed at `version` (read before the lookup ran).
    pub fn put(&self, version: Version, jti: &str, lookup: &Lookup) {
        let mut entries = self.shard(jti).lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.per_shard {
            entries.clear();
        }
        entries.insert(jti.to_owned(), (version, lookup.clone()));
    }

    /// Forgets every answer (after a failed read: whatever the database is
    /// now, nothing remembered from before may stand in for it).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
