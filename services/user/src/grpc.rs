//! The gRPC face of the service: maps proto messages to [`Accounts`] calls and back.

use letsgo_platform::proto::user::v1::{
    AuthReply, GetProfileRequest, LoginRequest, Profile, RegisterRequest, UpdateProfileReply,
    UpdateProfileRequest, user_service_server::UserService,
};
use tonic::{Request, Response, Status};

use crate::accounts::{Accounts, ProfileUpdate, Registration, SignedIn};

pub struct UserApi {
    accounts: Accounts,
}

impl UserApi {
    pub fn new(accounts: Accounts) -> Self {
        UserApi { accounts }
    }
}

fn auth_reply(signed_in: SignedIn) -> AuthReply {
    AuthReply {
        user_id: signed_in.user_id,
        token: signed_in.token.token,
        expires_at: signed_in.token.expires_at,
        role: signed_in.role.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<AuthReply>, Status> {
        let request = request.into_inner();
        let signed_in = self
            .accounts
            .register(Registration {
                username: request.username,
                password: request.password,
                email: request.email,
                phone: request.phone,
            })
            .await?;
        Ok(Response::new(auth_reply(signed_in)))
    }

    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<AuthReply>, Status> {
        let request = request.into_inner();
        let signed_in = self
            .accounts
            .login(&request.username, request.password)
            .await?;
        Ok(Response::new(auth_reply(signed_in)))
    }

    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let user = self.accounts.profile(request.into_inner().user_id).await?;
        Ok(Response::new(Profile {
            user_id: user.id,
            role: user.role().as_str().to_owned(),
            username: user.username,
            email: user.email,
            phone: user.phone,
            avatar: user.avatar,
            created_at: user.created_at.timestamp(),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileReply>, Status> {
        let request = request.into_inner();
        self.accounts
            .update_profile(
                request.user_id,
                ProfileUpdate {
                    email: request.email,
                    phone: request.phone,
                    avatar: request.avatar,
                },
            )
            .await?;
        Ok(Response::new(UpdateProfileReply {}))
    }
}
