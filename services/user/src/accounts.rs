//! The account rules: registering, signing in, reading and changing a profile.

use letsgo_platform::auth::{IssuedToken, Role, TokenKeys};
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};

use crate::passwords;
use crate::rules;
use crate::storage::{NewUser, ProfileChange, UserRow, UserStore};

pub struct Registration {
    pub username: String,
    pub password: String,
    pub email: String,
    pub phone: String,
}

pub struct SignedIn {
    pub user_id: i64,
    pub role: Role,
    pub token: IssuedToken,
}

#[derive(Default)]
pub struct ProfileUpdate {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub avatar: Option<String>,
}

pub struct Accounts {
    store: UserStore,
    tokens: TokenKeys,
    /// The initial admin's username, lowercased: nobody can register it.
    reserved_username: String,
}

impl Accounts {
    pub fn new(store: UserStore, tokens: TokenKeys, reserved_username: &str) -> Self {
        Accounts {
            store,
            tokens,
            reserved_username: reserved_username.trim().to_lowercase(),
        }
    }

    pub async fn register(&self, registration: Registration) -> AppResult<SignedIn> {
        let username = registration.username.trim();
        let email = registration.email.trim();
        rules::check_username(username)?;
        rules::check_password(&registration.password)?;
        rules::check_email(email)?;
        rules::check_phone(&registration.phone)?;
        // Cheap early answer for the common case; the unique index settles races. The initial
        // admin's name is taken even before its account exists (ADMIN_PASSWORD unset).
        if username.to_lowercase() == self.reserved_username
            || self.store.find_by_username(username).await?.is_some()
        {
            return Err(AppError::new(
                ErrorCode::UserExists,
                "username already taken",
            ));
        }
        let password_hash = passwords::hash(registration.password).await?;
        let role = Role::User;
        let user = self
            .store
            .insert(NewUser {
                username,
                email,
                phone: &registration.phone,
                password_hash: &password_hash,
                role,
            })
            .await?;
        self.sign_in(&user, role)
    }

    /// An unknown username and a wrong password are the same answer (2002), after the same work.
    /// Any name an account may have signs in, the original's longer ones included; only a
    /// name or password longer than any account's is refused (1001) before the lookup.
    pub async fn login(&self, username: &str, password: String) -> AppResult<SignedIn> {
        let username = username.trim();
        rules::check_sign_in_name(username)?;
        if password.chars().count() > rules::PASSWORD_MAX_CHARS {
            return Err(AppError::invalid(format!(
                "password must be at most {} characters",
                rules::PASSWORD_MAX_CHARS
            )));
        }
        let user = self.store.find_by_username(username).await?;
        let stored = user.as_ref().map(|user| user.password_hash.clone());
        let matches = passwords::verify(password, stored).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(AppError::of(ErrorCode::WrongPassword)),
        };
        self.sign_in(&user, user.role())
    }

    fn sign_in(&self, user: &UserRow, role: Role) -> AppResult<SignedIn> {
        let token = self.tokens.issue(user.id, &user.username, role)?;
        Ok(SignedIn {
            user_id: user.id,
            role,
            token,
        })
    }

    pub async fn profile(&self, user_id: i64) -> AppResult<UserRow> {
        self.store
            .find_by_id(user_id)
            .await?
            .ok_or_else(|| AppError::of(ErrorCode::UserNotFound))
    }

    pub async fn update_profile(&self, user_id: i64, update: ProfileUpdate) -> AppResult<()> {
        let email = update.email.as_deref().map(str::trim);
        if let Some(email) = email {
            rules::check_email(email)?;
        }
        if let Some(phone) = &update.phone {
            rules::check_phone(phone)?;
        }
        if let Some(avatar) = &update.avatar {
            rules::check_avatar(avatar)?;
        }
        let change = ProfileChange {
            email,
            phone: update.phone.as_deref(),
            avatar: update.avatar.as_deref(),
        };
        if self.store.update_profile(user_id, change).await? {
            Ok(())
        } else {
            Err(AppError::of(ErrorCode::UserNotFound))
        }
    }
}
