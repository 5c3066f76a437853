//! Password hashing with argon2id (OWASP's recommended parameters, the crate's defaults),
//! run off the async workers because each hash takes tens of milliseconds of CPU.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use letsgo_platform::errors::{AppError, AppResult};

/// A hash of a password nobody has, verified against when the username is unknown so that a
/// wrong username costs as much time as a wrong password.
static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub async fn hash(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(AppError::system)?
}

fn hash_now(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(AppError::system)
}

/// Answers whether `password` matches `stored` (a PHC string). With no stored hash it checks
/// against a decoy and answers false.
pub async fn verify(password: String, stored: Option<String>) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = match stored {
            Some(hash) => hash,
            None => match DECOY.get() {
                Some(decoy) => decoy.clone(),
                None => {
                    let decoy = hash_now("decoy password that matches nothing")?;
                    DECOY.get_or_init(|| decoy).clone()
                }
            },
        };
        let parsed = PasswordHash::new(&stored).map_err(AppError::system)?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(AppError::system)?
}
