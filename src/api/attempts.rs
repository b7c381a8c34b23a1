//! Counting login attempts (and password-change attempts, which count as
//! logins) before the password is checked, whichever engine keeps the counts:
//! this process's own throttle with SQLite, the shared table with
//! PostgreSQL (so 5 failures per address means 5 in total across nodes).

use std::time::Duration;

use crate::auth::throttle::{ClientKey, Reservation};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{LoginAttempt, LoginReservation};

/// An attempt counted as a failure until [`Attempt::succeeded`].
pub enum Attempt<'a> {
    /// Counted by this process.
    Local(Reservation<'a>),
    /// Counted in the shared table.
    Shared(LoginAttempt),
}

/// Reserves an attempt for `email` from `client`, atomically with the check
/// of the limits; `429` with `Retry-After` past them.
pub async fn reserve<'a>(
    state: &'a AppState,
    email: &str,
    client: Option<ClientKey>,
) -> Result<Attempt<'a>, ApiError> {
    match state.store.reserve_login(email, client).await? {
        LoginReservation::NotShared => state
            .throttle
            .reserve(email, client)
            .map(Attempt::Local)
            .map_err(too_many),
        LoginReservation::Counted(attempt) => Ok(Attempt::Shared(attempt)),
        LoginReservation::Refused(wait) => Err(too_many(wait)),
    }
}

fn too_many(wait: Duration) -> ApiError {
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests {
        retry_after: retry_after.max(1),
    }
}

impl Attempt<'_> {
    /// The password was right: the address's count clears. With the shared
    /// table this is a write; if it fails the answer is `503` (the attempt
    /// stays counted, never the other way round).
    pub async fn succeeded(self, state: &AppState) -> Result<(), ApiError> {
        match self {
            Attempt::Local(reservation) => {
                reservation.succeeded();
                Ok(())
            }
            Attempt::Shared(attempt) => Ok(state.store.login_succeeded(attempt).await?),
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {
        if let Attempt::Local(reservation) = self {
            reservation.failed();
        }
    }
}
