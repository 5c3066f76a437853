//! Accounts: sign-up, sign-in, profiles and admin rights.

use super::*;

#[tokio::test]
async fn a_new_user_registers_signs_in_and_edits_their_profile() {
    let shop = Shop::start().await;
    let (user_id, token) = shop.register("john").await;
    assert!(user_id > 0);

    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "john", "password": "password123"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["code"], 0);
    assert_eq!(body["msg"], "success");
    assert_eq!(body["data"]["userId"], user_id);

    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"],
        json!({
            "userId": user_id, "username": "john", "email": "john@example.com",
            "phone": "13800138000", "avatar": "", "createdAt": body["data"]["createdAt"],
        })
    );
    assert!(body["data"]["createdAt"].as_i64().unwrap() > 1_700_000_000);

    let (status, body) = shop
        .send(
            shop.http
                .put(format!("{}/api/v1/user/profile", shop.base))
                .bearer_auth(&token)
                .json(
                    &json!({"avatar": "https://img.example.com/john.png", "phone": "13900139000"}),
                ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["success"], true);
    let (_, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(body["data"]["avatar"], "https://img.example.com/john.png");
    assert_eq!(body["data"]["phone"], "13900139000");
    assert_eq!(body["data"]["email"], "john@example.com");
}

#[tokio::test]
async fn registering_a_taken_username_is_409_with_2001() {
    let shop = Shop::start().await;
    shop.register("alice").await;
    let (status, body) = shop
        .post(
            "/api/v1/user/register",
            json!({"username": "alice", "password": "password123", "email": "new@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 2001);
}

#[tokio::test]
async fn a_wrong_password_is_401_with_2002() {
    let shop = Shop::start().await;
    shop.register("bob").await;
    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "bob", "password": "not-his"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2002);
}

#[tokio::test]
async fn the_profile_needs_a_valid_unexpired_token() {
    let shop = Shop::start().await;
    let (user_id, _) = shop.register("carol").await;

    let (status, body) = shop.get_with_token("/api/v1/user/profile", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some("garbage.token.here"))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .send(
            shop.http
                .get(format!("{}/api/v1/user/profile", shop.base))
                .header("Authorization", "Basic Y2Fyb2w6cHc="),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);

    let keys = letsgo_platform::auth::TokenKeys::new(
        SECRET.as_bytes(),
        "letsgo",
        "letsgo-api",
        Duration::from_secs(60),
    );
    let now = chrono_now();
    let expired = keys
        .issue_with_times(
            user_id,
            "carol",
            letsgo_platform::auth::Role::User,
            now - 7200,
            now - 3600,
        )
        .unwrap();
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&expired.token))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2004);

    let forged = letsgo_platform::auth::TokenKeys::new(
        b"someone-elses-secret!!",
        "letsgo",
        "letsgo-api",
        Duration::from_secs(60),
    )
    .issue(user_id, "carol", letsgo_platform::auth::Role::Admin)
    .unwrap();
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&forged.token))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn admin_rights_follow_the_account_not_the_token() {
    let shop = Shop::start().await;
    let lamp = || json!({"name": "Lamp", "description": "bright", "price": 10, "stock": 1, "category": "home", "images": ["https://img.example.com/l.jpg"]});
    let add = |token: String| {
        let shop = &shop;
        async move {
            shop.send_json(
                reqwest::Method::POST,
                "/api/v1/product/add",
                Some(&token),
                lamp(),
            )
            .await
        }
    };
    // Nobody becomes an admin by registering the admin's name.
    let (status, body) = shop
        .post(
            "/api/v1/user/register",
            json!({"username": "Admin", "password": "password123", "email": "mallory@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 2001);

    // Granted: frank's token still says "user", and the gateway asks for his role.
    let (_, frank) = shop.register("frank").await;
    let (status, body) = add(frank.clone()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
    shop.user_command(&["grant-admin", "frank"]).await;
    let (status, body) = add(frank.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Revoked: the admin's token still says "admin" for a day, and counts for nothing.
    let admin = shop.sign_in_admin().await;
    shop.user_command(&["revoke-admin", "admin"]).await;
    let (status, body) = add(admin).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
}

/// The original declared usernames of 3 to 20 characters but never checked it, and its column
/// holds 50, so its accounts may have longer names: its own test scripts register
/// `paymenttest_<unix time>`. Registration keeps the documented rule; an account that already
/// has such a name (as a migrated row would) signs in, changes its profile and buys.
#[tokio::test]
async fn an_account_of_the_original_with_a_longer_name_signs_in_and_buys() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let mug = shop
        .add_product(&admin, "Travel mug", json!(12.5), 10, "kitchen")
        .await;
    let long = "paymenttest_1733300000";
    let longest = "m".repeat(letsgo_platform::limits::USERNAME_STORED_MAX_CHARS);
    let database = sqlx::PgPool::connect(shop.kit.database_url(ServiceName::User))
        .await
        .unwrap();
    let password_hash = letsgo_user::passwords::hash("password123".to_owned())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in [long, longest.as_str()] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, email, phone, password_hash) \
             VALUES ($1, $1 || '@example.com', '13800138000', $2) RETURNING id",
        )
        .bind(name)
        .bind(&password_hash)
        .fetch_one(&database)
        .await
        .unwrap();
        ids.push(id);
    }

    // Nobody registers such a name now.
    let (status, body) = shop
        .post(
            "/api/v1/user/register",
            json!({"username": "paymenttest_1733300001", "password": "password123", "email": "p1@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);

    let sign_in = |name: String| {
        let shop = &shop;
        async move {
            shop.post(
                "/api/v1/user/login",
                json!({"username": name, "password": "password123"}),
            )
            .await
        }
    };
    let (status, body) = sign_in(longest.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["userId"], ids[1]);
    // Longer than any account's name can be: refused before any lookup.
    let (status, body) = sign_in(format!("{longest}m")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);

    let (status, body) = sign_in(long.to_owned()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["userId"], ids[0]);
    let token = body["data"]["token"].as_str().unwrap().to_owned();

    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/user/profile",
            Some(&token),
            json!({"phone": "13900139000", "avatar": "https://img.example.com/p.png"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["username"], long);
    assert_eq!(body["data"]["phone"], "13900139000");

    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/cart/add",
            Some(&token),
            json!({"productId": mug, "quantity": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = shop.checkout(&token, mug, json!(12.5)).await;
    assert!(
        wait_until_paid(&shop, &token, order_id, Duration::from_secs(30)).await,
        "order {order_id} of {long} turns paid"
    );
}
