//! Who is an admin. The initial admin is made at start from ADMIN_USERNAME and ADMIN_PASSWORD
//! when it does not exist, and its password is never touched again; further admins are granted
//! and revoked from the command line (`letsgo-user grant-admin NAME`), never through the API.

use letsgo_platform::assembly::ServiceError;
use letsgo_platform::auth::Role;
use letsgo_platform::errors::ErrorCode;

use crate::config::InitialAdminArgs;
use crate::passwords;
use crate::rules;
use crate::storage::{NewUser, Revocation, UserStore};

/// Shortest initial admin password: it guards the catalogue, so more than a shopper's minimum.
pub const ADMIN_PASSWORD_MIN_CHARS: usize = 12;

/// Checks the settings before anything is started; the error names the setting and never
/// repeats the password.
pub fn check(args: &InitialAdminArgs) -> Result<(), ServiceError> {
    rules::check_username(args.admin_username.trim())
        .map_err(|error| ServiceError::setting("ADMIN_USERNAME", error.message))?;
    if let Some(password) = &args.admin_password {
        let password = password.expose();
        if password.chars().count() < ADMIN_PASSWORD_MIN_CHARS {
            return Err(ServiceError::setting(
                "ADMIN_PASSWORD",
                format!("must be at least {ADMIN_PASSWORD_MIN_CHARS} characters"),
            ));
        }
        rules::check_password(password)
            .map_err(|error| ServiceError::setting("ADMIN_PASSWORD", error.message))?;
    }
    Ok(())
}

/// Makes the initial admin when no account has its username. An existing account is left as
/// it is, password and role alike: a plain account that took the name before this release is
/// not promoted (it may be a stranger's), and the log says so.
pub async fn ensure_initial(store: &UserStore, args: &InitialAdminArgs) -> Result<(), String> {
    let username = args.admin_username.trim();
    let database_error = |error: letsgo_platform::errors::AppError| {
        format!("initial admin {username}: {}", error.message)
    };
    if let Some(existing) = store
        .find_by_username(username)
        .await
        .map_err(database_error)?
    {
        if existing.role() == Role::Admin {
            tracing::info!(
                username,
                "initial admin exists; its password is left as it is"
            );
        } else {
            tracing::warn!(
                username,
                "ADMIN_USERNAME names an account that is not an admin; it is not promoted. \
                 Choose another ADMIN_USERNAME or run `letsgo-user grant-admin` if it is yours"
            );
        }
        return Ok(());
    }
    let Some(password) = args
        .admin_password
        .as_ref()
        .map(|secret| secret.expose().to_owned())
    else {
        tracing::warn!(
            username,
            "no admin account: ADMIN_PASSWORD is unset; the username stays reserved. Set \
             ADMIN_PASSWORD and restart, or grant an account with `letsgo-user grant-admin`"
        );
        return Ok(());
    };
    let password_hash = passwords::hash(password).await.map_err(database_error)?;
    // `.invalid` is reserved (RFC 2606): the address reaches nobody until the admin sets one.
    let email = format!("{}@admin.invalid", username.to_lowercase());
    match store
        .insert(NewUser {
            username,
            email: &email,
            phone: "",
            password_hash: &password_hash,
            role: Role::Admin,
        })
        .await
    {
        Ok(_) => tracing::info!(username, "initial admin created"),
        // Another replica made it first.
        Err(error) if error.code == ErrorCode::UserExists => {}
        Err(error) => return Err(database_error(error)),
    }
    Ok(())
}

/// What `grant-admin` and `revoke-admin` print, or why they refused.
pub async fn grant(store: &UserStore, username: &str) -> Result<String, String> {
    match store.grant_admin(username.trim()).await {
        Ok(Some(user)) => Ok(format!("{} is an admin", user.username)),
        Ok(None) => Err(format!("no account is named {}", username.trim())),
        Err(error) => Err(error.message),
    }
}

pub async fn revoke(store: &UserStore, username: &str) -> Result<String, String> {
    match store.revoke_admin(username.trim()).await {
        Ok(Revocation::Revoked(name)) => Ok(format!("{name} is no longer an admin")),
        Ok(Revocation::NotAnAdmin(name)) => Ok(format!("{name} was not an admin")),
        Ok(Revocation::LastAdmin(name)) => Err(format!(
            "{name} is the last admin; grant another account first"
        )),
        Ok(Revocation::NoSuchAccount) => Err(format!("no account is named {}", username.trim())),
        Err(error) => Err(error.message),
    }
}

pub async fn list(store: &UserStore) -> Result<String, String> {
    let names = store.admins().await.map_err(|error| error.message)?;
    if names.is_empty() {
        return Ok("no account is an admin".to_owned());
    }
    Ok(names.join("\n"))
}

/// Replaces an account's password (admins' need the admin minimum); sign-ins with the old one
/// fail from now on, though tokens already issued stay valid until they expire.
pub async fn set_password(
    store: &UserStore,
    username: &str,
    password: String,
) -> Result<String, String> {
    let username = username.trim();
    let account = store
        .find_by_username(username)
        .await
        .map_err(|error| error.message)?
        .ok_or_else(|| format!("no account is named {username}"))?;
    let minimum = if account.role() == Role::Admin {
        ADMIN_PASSWORD_MIN_CHARS
    } else {
        rules::PASSWORD_MIN
    };
    if password.chars().count() < minimum {
        return Err(format!(
            "the password must be at least {minimum} characters"
        ));
    }
    rules::check_password(&password).map_err(|error| error.message)?;
    let password_hash = passwords::hash(password)
        .await
        .map_err(|error| error.message)?;
    store
        .set_password_hash(account.id, &password_hash)
        .await
        .map_err(|error| error.message)?;
    Ok(format!("{}'s password is changed", account.username))
}
