//! The `users` table. All SQL of the service is here.

use chrono::{DateTime, Utc};
use letsgo_platform::auth::Role;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::events::topics;
use letsgo_platform::events::{self, Event};
use sqlx::{FromRow, PgPool};
use tracing::instrument;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub phone: String,
    pub avatar: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::User)
    }
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

#[derive(Default)]
pub struct ProfileChange<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub avatar: Option<&'a str>,
}

/// How `revoke_admin` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Revocation {
    Revoked(String),
    NotAnAdmin(String),
    LastAdmin(String),
    NoSuchAccount,
}

/// Maps a unique-index violation to 2001, naming what was taken.
fn conflict_or(error: sqlx::Error) -> AppError {
    if let sqlx::Error::Database(db) = &error {
        match db.constraint() {
            Some("users_username_key") => {
                return AppError::new(ErrorCode::UserExists, "username already taken");
            }
            Some("users_email_key") => {
                return AppError::new(ErrorCode::UserExists, "email already registered");
            }
            _ => {}
        }
    }
    AppError::from(error)
}

#[derive(Clone)]
pub struct UserStore {
    pool: PgPool,
}

const USER_COLUMNS: &str = "id, username, email, phone, avatar, password_hash, role, created_at";

impl UserStore {
    pub fn new(pool: PgPool) -> Self {
        UserStore { pool }
    }

    /// Inserts the user and its `user.registered` event in one transaction.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "insert"))]
    pub async fn insert(&self, user: NewUser<'_>) -> Result<UserRow, AppError> {
        let mut transaction = self.pool.begin().await?;
        let row: UserRow = sqlx::query_as(&format!(
            "INSERT INTO users (username, email, phone, password_hash, role) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
        ))
        .bind(user.username)
        .bind(user.email)
        .bind(user.phone)
        .bind(user.password_hash)
        .bind(user.role.as_str())
        .fetch_one(&mut *transaction)
        .await
        .map_err(conflict_or)?;
        let event = Event::new(
            topics::USER_REGISTERED,
            serde_json::json!({
                "userId": row.id,
                "username": row.username,
                "email": row.email,
                "role": row.role,
            }),
        )
        .map_err(AppError::system)?;
        events::enqueue(&mut transaction, &row.id.to_string(), &event).await?;
        transaction.commit().await?;
        Ok(row)
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "find_by_username"))]
    pub async fn find_by_username(&self, username: &str) -> Result<Option<UserRow>, AppError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "find_by_id"))]
    pub async fn find_by_id(&self, id: i64) -> Result<Option<UserRow>, AppError> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Makes the named account an admin; None when there is no such account.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "grant_admin"))]
    pub async fn grant_admin(&self, username: &str) -> Result<Option<UserRow>, AppError> {
        Ok(sqlx::query_as(&format!(
            "UPDATE users SET role = 'admin', updated_at = now() \
             WHERE lower(username) = lower($1) RETURNING {USER_COLUMNS}"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Takes admin rights from the named account unless it is the last admin. The admins'
    /// rows are locked first, so two revocations at once cannot leave the shop without one.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "revoke_admin"))]
    pub async fn revoke_admin(&self, username: &str) -> Result<Revocation, AppError> {
        let mut transaction = self.pool.begin().await?;
        let admins: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, username FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *transaction)
        .await?;
        let Some((id, name)) = admins
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(username))
            .cloned()
        else {
            let exists = self.find_by_username(username).await?;
            return Ok(match exists {
                Some(user) => Revocation::NotAnAdmin(user.username),
                None => Revocation::NoSuchAccount,
            });
        };
        if admins.len() == 1 {
            return Ok(Revocation::LastAdmin(name));
        }
        sqlx::query("UPDATE users SET role = 'user', updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(Revocation::Revoked(name))
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "set_password_hash"))]
    pub async fn set_password_hash(&self, id: i64, password_hash: &str) -> Result<(), AppError> {
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The admins' usernames, oldest account first.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "admins"))]
    pub async fn admins(&self) -> Result<Vec<String>, AppError> {
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE role = 'admin' ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Changes the given fields; answers false when there is no such user.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "update_profile"))]
    pub async fn update_profile(
        &self,
        id: i64,
        change: ProfileChange<'_>,
    ) -> Result<bool, AppError> {
        let updated = sqlx::query(
            "UPDATE users SET email = COALESCE($2, email), phone = COALESCE($3, phone), \
             avatar = COALESCE($4, avatar), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(change.email)
        .bind(change.phone)
        .bind(change.avatar)
        .execute(&self.pool)
        .await
        .map_err(conflict_or)?;
        Ok(updated.rows_affected() == 1)
    }
}
