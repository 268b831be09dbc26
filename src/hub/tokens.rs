//! Who may do what: the hub's tokens and their roles (pure, no I/O).
//!
//! | role     | flag (env)                                   | may                                  |
//! |----------|----------------------------------------------|--------------------------------------|
//! | admin    | `--token` (`AGENTPULSE_TOKEN`)               | everything                           |
//! | ingest   | `--ingest-token` (`AGENTPULSE_INGEST_TOKENS`) | write: `POST /events`, `/ingest`     |
//! | read     | `--read-token` (`AGENTPULSE_READ_TOKENS`)     | read: streams, `/api/*`, `/metrics`  |
//!
//! Each flag may be given any number of times. A kind of access is
//! protected as soon as some token grants it (an admin token grants every
//! kind): with only `--ingest-token`, writes need it and reads stay open.
//! A request without a token, or with one the hub does not know, is
//! refused with 401; one whose token is known but does not grant the
//! access, with 403. `/health` and the dashboard page need no token (they
//! show no events); admin calls need an admin token.

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Send events.
    Write,
    /// Read events, metrics and configuration.
    Read,
    /// Change the hub's own state (acknowledge a loss, ...).
    Admin,
}

impl Access {
    /// How the access is named in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Write => "send events",
            Access::Read => "read events",
            Access::Admin => "administer the hub",
        }
    }
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Writes only.
    Ingest,
    /// Reads only.
    Read,
}

impl Role {
    /// Whether a token of this role may do `access`.
    pub fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Role::Admin, _) | (Role::Ingest, Access::Write) | (Role::Read, Access::Read)
        )
    }

    /// The flag that gives tokens of this role.
    pub fn flag(self) -> &'static str {
        match self {
            Role::Admin => "--token",
            Role::Ingest => "--ingest-token",
            Role::Read => "--read-token",
        }
    }
}

/// The tokens a hub knows.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<(String, Role)>,
}

// Never print the tokens themselves.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(_, r)| r))
            .finish()
    }
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token given, or one the hub does not know (401).
    Unauthenticated(String),
    /// A known token that does not grant the access (403).
    Forbidden(String),
}

impl Tokens {
    /// No tokens: everything is open.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Adds tokens of `role` (empty strings are ignored).
    pub fn with(mut self, role: Role, tokens: impl IntoIterator<Item = String>) -> Tokens {
        self.tokens.extend(
            tokens
                .into_iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .map(|t| (t, role)),
        );
        self
    }

    /// Whether no token is set.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `access` needs a token.
    pub fn protects(&self, access: Access) -> bool {
        self.tokens.iter().any(|(_, r)| r.grants(access))
    }

    /// The role of `given`, compared in constant time with every token.
    pub fn role_of(&self, given: &str) -> Option<Role> {
        // Every token is compared, so the time taken says nothing about
        // which one (or how much of one) matched.
        let mut found = None;
        for (t, r) in &self.tokens {
            if same(given.as_bytes(), t.as_bytes()) {
                found = found.or(Some(*r));
            }
        }
        found
    }

    /// Whether a request carrying `given` may do `access`; `how` says how a
    /// token is sent on this path, for the message.
    pub fn authorize(&self, given: Option<&str>, access: Access, how: &str) -> Result<(), Denied> {
        if !self.protects(access) {
            return Ok(());
        }
        let Some(given) = given else {
            return Err(Denied::Unauthenticated(format!(
                "this hub requires a token to {}: {how}",
                access.as_str()
            )));
        };
        match self.role_of(given) {
            None => Err(Denied::Unauthenticated("invalid token".to_owned())),
            Some(role) if role.grants(access) => Ok(()),
            Some(role) => Err(Denied::Forbidden(format!(
                "this token (given with {}) may not {}",
                role.flag(),
                access.as_str()
            ))),
        }
    }
}

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: 32 bytes from the OS, as 43 URL-safe characters.
pub fn generate() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    // 6 bits a character; 256 bits give 42 whole characters and 4 bits.
    let mut out = String::with_capacity(43);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::none()
            .with(Role::Admin, ["adm".to_owned()])
            .with(Role::Ingest, ["in1".to_owned(), "in2".to_owned()])
            .with(Role::Read, ["rd".to_owned(), "  ".to_owned()])
    }

    #[test]
    fn each_role_grants_its_access_only() {
        let t = tokens();
        for (given, write, read, admin) in [
            ("adm", true, true, true),
            ("in1", true, false, false),
            ("in2", true, false, false),
            ("rd", false, true, false),
        ] {
            assert_eq!(
                t.authorize(Some(given), Access::Write, "").is_ok(),
                write,
                "{given}"
            );
            assert_eq!(
                t.authorize(Some(given), Access::Read, "").is_ok(),
                read,
                "{given}"
            );
            assert_eq!(
                t.authorize(Some(given), Access::Admin, "").is_ok(),
                admin,
                "{given}"
            );
        }
    }

    #[test]
    fn unknown_and_missing_are_401_wrong_role_is_403() {
        let t = tokens();
        assert!(matches!(
            t.authorize(None, Access::Read, "send it"),
            Err(Denied::Unauthenticated(m)) if m.contains("send it")
        ));
        assert!(matches!(
            t.authorize(Some("nope"), Access::Read, ""),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            t.authorize(Some("in1"), Access::Read, ""),
            Err(Denied::Forbidden(m)) if m.contains("--ingest-token") && m.contains("read events")
        ));
        // Blank tokens are not tokens.
        assert!(t.role_of("").is_none() && t.role_of("  ").is_none());
    }

    #[test]
    fn an_access_no_token_grants_is_open() {
        let t = Tokens::none().with(Role::Ingest, ["in".to_owned()]);
        assert!(t.protects(Access::Write));
        assert!(!t.protects(Access::Read));
        assert!(t.authorize(None, Access::Read, "").is_ok());
        assert!(t.authorize(None, Access::Write, "").is_err());
        assert!(Tokens::none().authorize(None, Access::Admin, "").is_ok());
    }

    #[test]
    fn generated_tokens_are_long_random_and_url_safe() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn debug_does_not_print_tokens() {
        assert!(!format!("{:?}", tokens()).contains("adm"));
    }
}
