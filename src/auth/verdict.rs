//! The rules that decide whether a token with a good signature is accepted,
//! given what storage knows about it ([`Lookup`]). One function, [`judge`],
//! used by the token check of every authenticated route and re-applied
//! inside the writes that depend on the caller's token (logout, password
//! change), so both always agree.
//!
//! A token is accepted only if (a) its `jti` is not in the denylist, (b) when
//! it has a `sid`, that session is active, and (c) it was issued after its
//! user's last global logout or password change. `iat` counts whole seconds,
//! so tokens with a `sid` also carry `iat_us`, their issue time in
//! microseconds; a token without one (issued before v2) whose `iat` is the
//! second of the event counts as issued before it.

use crate::store::{Lookup, SessionState};

/// When a token was issued, as precisely as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// `iat_us`: Unix microseconds.
    Micros(i64),
    /// Only `iat`: Unix seconds.
    Seconds(i64),
    /// Neither: treated as issued before any mark.
    Unknown,
}

impl Issued {
    /// Whether a token issued at this time was issued after a mark at
    /// `mark_us` (Unix µs; 0 means no mark).
    pub fn is_after(self, mark_us: i64) -> bool {
        if mark_us <= 0 {
            return true;
        }
        match self {
            Issued::Micros(at) => at > mark_us,
            // The same second as the mark counts as before it.
            Issued::Seconds(at) => at > mark_us.div_euclid(1_000_000),
            Issued::Unknown => false,
        }
    }
}

/// Why a token with a good signature is refused; the text becomes the
/// challenge's `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// (a): logged out.
    Revoked,
    /// (b): its session ended or expired (or never existed).
    SessionEnded,
    /// (c): issued before a global logout or password change.
    LoggedOutEverywhere,
    /// Its user no longer exists.
    UserGone,
}

impl Refusal {
    /// The `error_description` of the `invalid_token` challenge.
    pub fn description(self) -> &'static str {
        match self {
            Refusal::Revoked => "the access token has been revoked",
            Refusal::SessionEnded => "the access token's session has ended",
            Refusal::LoggedOutEverywhere => {
                "the access token was issued before the user logged out everywhere or changed their password"
            }
            Refusal::UserGone => "the token's user no longer exists",
        }
    }
}

/// What a token says about itself, for [`judge`].
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// The user its `sub` names.
    pub user_id: i64,
    /// Its `sid`, if any.
    pub sid: Option<&'a str>,
    /// When it was issued.
    pub issued: Issued,
}

/// Decides (a), (b) and (c) for a token at `now_s` (Unix seconds).
pub fn judge(token: TokenFacts<'_>, lookup: &Lookup, now_s: i64) -> Result<(), Refusal> {
    if lookup.revoked {
        return Err(Refusal::Revoked);
    }
    let Some(user) = &lookup.user else {
        return Err(Refusal::UserGone);
    };
    if token.sid.is_some() && !session_allows(lookup.session, token.user_id, now_s) {
        return Err(Refusal::SessionEnded);
    }
    if !token.issued.is_after(user.tokens_invalid_before_us) {
        return Err(Refusal::LoggedOutEverywhere);
    }
    Ok(())
}

fn session_allows(session: Option<SessionState>, user_id: i64, now_s: i64) -> bool {
    session.is_some_and(|s| s.user_id == user_id && s.is_active(now_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_second_counts_as_before_for_tokens_without_microseconds() {
        let mark = 1_700_000_000_500_000; // .5 s into second 1_700_000_000
        assert!(!Issued::Seconds(1_700_000_000).is_after(mark));
        assert!(Issued::Seconds(1_700_000_001).is_after(mark));
        assert!(!Issued::Micros(1_700_000_000_499_999).is_after(mark));
        assert!(!Issued::Micros(mark).is_after(mark));
        assert!(Issued::Micros(mark + 1).is_after(mark));
        assert!(!Issued::Unknown.is_after(mark));
        assert!(Issued::Unknown.is_after(0));
    }
}
