//! Sign-in tokens: HS256 JWTs with `exp`, `iss` and `aud`, issued by the user service and
//! checked by the gateway. The algorithm is pinned when checking, so a token signed any other
//! way (`none`, RS256 with the secret as a public key, ...) is refused.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::JwtArgs;
use crate::errors::{AppError, ErrorCode};

/// What a user may do beyond their own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of a letsgo token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT subjects are strings).
    pub sub: String,
    pub username: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// The signed-in caller, as read from a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// An issued token and when it stops working (unix seconds).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: i64,
}

/// Issues and checks tokens with one shared secret. Cheap to clone: handlers and middleware
/// clone their state on every request, so the keys live behind one `Arc`.
#[derive(Clone)]
pub struct TokenKeys {
    inner: std::sync::Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is exact: a token is good until `exp` and not a second longer.
        validation.leeway = 0;
        TokenKeys {
            inner: std::sync::Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                ttl,
            }),
        }
    }

    pub fn from_args(args: &JwtArgs) -> Self {
        TokenKeys::new(
            args.jwt_secret.expose().as_bytes(),
            &args.jwt_issuer,
            &args.jwt_audience,
            args.jwt_ttl,
        )
    }

    pub fn issue(&self, user_id: i64, username: &str, role: Role) -> Result<IssuedToken, AppError> {
        let now = chrono::Utc::now().timestamp();
        let exp = now + i64::try_from(self.inner.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self.issue_with_times(user_id, username, role, now, exp)
    }

    /// Issues a token with explicit times; tests use it to make expired tokens.
    pub fn issue_with_times(
        &self,
        user_id: i64,
        username: &str,
        role: Role,
        iat: i64,
        exp: i64,
    ) -> Result<IssuedToken, AppError> {
        let claims = Claims {
            sub: user_id.to_string(),
            username: username.to_owned(),
            role,
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )
        .map_err(AppError::system)?;
        Ok(IssuedToken {
            token,
            expires_at: exp,
        })
    }

    /// Checks a token: 2004 when it has expired, 2003 for anything else wrong with it.
    pub fn verify(&self, token: &str) -> Result<Caller, AppError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
                .map_err(|error| match error.kind() {
                    ErrorKind::ExpiredSignature => AppError::of(ErrorCode::TokenExpired),
                    _ => AppError::of(ErrorCode::InvalidToken),
                })?;
        let user_id = data
            .claims
            .sub
            .parse::<i64>()
            .map_err(|_| AppError::of(ErrorCode::InvalidToken))?;
        Ok(Caller {
            user_id,
            username: data.claims.username,
            role: data.claims.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"0123456789abcdef0123",
            "letsgo",
            "letsgo-api",
            Duration::from_secs(60),
        )
    }

    #[test]
    fn an_issued_token_verifies_as_its_user() {
        let keys = keys();
        let issued = keys.issue(42, "alice", Role::Admin).unwrap();
        let caller = keys.verify(&issued.token).unwrap();
        assert_eq!(caller.user_id, 42);
        assert_eq!(caller.username, "alice");
        assert!(caller.is_admin());
    }

    #[test]
    fn an_expired_token_is_2004() {
        let keys = keys();
        let now = chrono::Utc::now().timestamp();
        let issued = keys
            .issue_with_times(1, "bob", Role::User, now - 100, now - 10)
            .unwrap();
        assert_eq!(
            keys.verify(&issued.token).unwrap_err().code,
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn a_token_from_another_secret_or_audience_is_2003() {
        let other_secret = TokenKeys::new(
            b"another-secret-of-length",
            "letsgo",
            "letsgo-api",
            Duration::from_secs(60),
        );
        let other_audience = TokenKeys::new(
            b"0123456789abcdef0123",
            "letsgo",
            "elsewhere",
            Duration::from_secs(60),
        );
        for foreign in [other_secret, other_audience] {
            let issued = foreign.issue(1, "eve", Role::Admin).unwrap();
            assert_eq!(
                keys().verify(&issued.token).unwrap_err().code,
                ErrorCode::InvalidToken
            );
        }
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        // header {"alg":"none","typ":"JWT"} with admin claims and no signature
        let claims = serde_json::json!({
            "sub": "1", "username": "eve", "role": "admin", "iss": "letsgo",
            "aud": "letsgo-api", "iat": 0, "exp": 4_000_000_000_i64
        });
        use std::fmt::Write;
        let b64 = |bytes: &[u8]| {
            // base64url without padding, written out to avoid a dependency for one test
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    let index = (n >> (18 - 6 * i)) & 63;
                    out.write_char(ALPHABET[index as usize] as char).unwrap();
                }
            }
            out
        };
        let token = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(
            keys().verify(&token).unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }
}
