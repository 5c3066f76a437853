//! The shop as a shopper sees it through the gateway's HTTP API: setting up an admin, a
//! catalogue and shoppers on a fresh shop, then browsing, searching, filling carts and paying.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hyper::Method;
use hyper::header::HeaderName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::{Call, Connection, Failure, Reply};
use crate::mix::Action;
use crate::report::{Operation, Recorder};

/// Products are created with this much stock, and topped up by as much when one sells out.
const STOCK: i64 = 1_000_000;
/// A word in every product this tool creates, so a later run finds and reuses them.
const MARKER: &str = "lgbench";
const CATEGORIES: [&str; 6] = ["home", "kitchen", "books", "garden", "toys", "sports"];
const ADJECTIVES: [&str; 8] = [
    "Walnut", "Copper", "Linen", "Ceramic", "Bamboo", "Wool", "Glass", "Cedar",
];
const NOUNS: [&str; 10] = [
    "Teapot", "Lamp", "Notebook", "Planter", "Kite", "Racket", "Bowl", "Blanket", "Clock", "Mug",
];
/// A shopper's cart is emptied before it grows past this many lines (the shop allows 100).
const CART_LINES: usize = 20;

/// The envelope every answer comes in.
#[derive(Deserialize)]
struct Envelope<T> {
    code: i64,
    data: Option<T>,
}

/// The error label of an answer that is not a success (HTTP 200 with code 0), or `None`.
fn failure_label(reply: &Reply) -> Option<String> {
    // Successes are the common case: recognise them without parsing the body.
    if reply.status.is_success() && reply.body.starts_with(br#"{"code":0,"#) {
        return None;
    }
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    match serde_json::from_slice::<Code>(&reply.body) {
        Ok(Code { code: 0 }) if reply.status.is_success() => None,
        Ok(Code { code }) => Some(format!("{}/{code}", reply.status.as_u16())),
        Err(_) => Some(reply.status.as_u16().to_string()),
    }
}

/// An answer's `data`, or the error label of a failed call.
pub(crate) fn data<T: DeserializeOwned>(outcome: Result<Reply, Failure>) -> Result<T, String> {
    let reply = outcome.map_err(|f| f.label().to_owned())?;
    if let Some(label) = failure_label(&reply) {
        return Err(label);
    }
    match serde_json::from_slice::<Envelope<T>>(&reply.body) {
        Ok(Envelope {
            code: 0,
            data: Some(data),
        }) => Ok(data),
        _ => Err(format!("{}/unexpected-body", reply.status.as_u16())),
    }
}

/// Success (`Ok`) or the error label of an answer whose body is not needed.
fn outcome(result: Result<Reply, Failure>) -> Result<(), String> {
    let reply = result.map_err(|f| f.label().to_owned())?;
    failure_label(&reply).map_or(Ok(()), Err)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Token {
    pub(crate) token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductPage {
    products: Vec<ProductSummary>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductSummary {
    id: i64,
    description: String,
    stock: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewProduct {
    pub(crate) product_id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    order_id: i64,
    /// Yuan, as a JSON number; sent back unchanged as the payment's amount.
    total_amount: Value,
}

/// What the setup made, shared read-only by every shopper.
pub struct Shop {
    pub admin_token: Option<String>,
    pub products: Vec<i64>,
    /// Unix millisecond of each product's last top-up, so that shoppers who find it sold out
    /// at the same moment top it up once.
    restocked_at: Vec<AtomicU64>,
    pub user_tokens: Vec<String>,
}

/// What the setup is asked for.
pub struct SetupPlan<'a> {
    pub admin_user: &'a str,
    pub admin_password: &'a str,
    pub products: usize,
    pub users: usize,
}

fn fatal(what: &str, err: String) -> String {
    format!("{what}: {err}")
}

impl Shop {
    /// Signs in the admin, finds or creates the catalogue this tool uses, and registers the
    /// shoppers. Progress goes to stderr.
    pub async fn set_up(conn: &mut Connection, plan: &SetupPlan<'_>) -> Result<Shop, String> {
        let admin_token = sign_in_admin(conn, plan.admin_user, plan.admin_password).await?;
        let products = ensure_products(conn, &admin_token, plan.products).await?;
        eprintln!(
            "setup: admin '{}' signed in; {} products (ids {:?}...)",
            plan.admin_user,
            products.len(),
            &products[..products.len().min(5)]
        );
        let user_tokens = register_shoppers(conn, plan.users).await?;
        if plan.users > 0 {
            eprintln!("setup: {} shoppers registered", user_tokens.len());
        }
        Ok(Shop {
            admin_token: Some(admin_token),
            restocked_at: products.iter().map(|_| AtomicU64::new(0)).collect(),
            products,
            user_tokens,
        })
    }

    /// Adds stock to a product a shopper found sold out, unless another shopper just did.
    async fn restock(&self, conn: &mut Connection, rec: &mut Recorder, index: usize) {
        let Some(token) = self.admin_token.as_deref() else {
            return;
        };
        let now = unix_millis();
        let last = self.restocked_at[index].load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self.restocked_at[index]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let body = json!({"productId": self.products[index], "delta": STOCK});
        let began = Instant::now();
        let result = conn
            .send(Call::with_json(Method::PUT, "/api/v1/product/stock", &body).token(Some(token)))
            .await;
        rec.record(Operation::Restock, began, Instant::now(), outcome(result));
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) async fn sign_in_admin(
    conn: &mut Connection,
    user: &str,
    password: &str,
) -> Result<String, String> {
    if password.is_empty() {
        return Err(
            "the admin's password is needed to make products: pass --admin-password or \
                    ADMIN_PASSWORD (make up keeps it in /tmp/letsgo/admin-password)"
                .to_owned(),
        );
    }
    let login = json!({"username": user, "password": password});
    let token: Token = data(
        conn.send(Call::with_json(Method::POST, "/api/v1/user/login", &login))
            .await,
    )
    .map_err(|label| {
        let hint = if label.ends_with("/2002") {
            " (wrong password: pass the shop's ADMIN_PASSWORD)"
        } else {
            ""
        };
        fatal(&format!("signing in admin '{user}'{hint}"), label)
    })?;
    Ok(token.token)
}

/// The ids of `count` products made by this tool, creating the missing ones and topping up
/// the stock of those running low.
pub(crate) async fn ensure_products(
    conn: &mut Connection,
    token: &str,
    count: usize,
) -> Result<Vec<i64>, String> {
    let path = format!("/api/v1/product/search?keyword={MARKER}&page=1&pageSize=100");
    let page: ProductPage = data(conn.send(Call::get(&path)).await)
        .map_err(|e| fatal("looking for the products of an earlier run", e))?;
    let mut ids = Vec::new();
    for product in page
        .products
        .iter()
        .filter(|p| p.description.contains(MARKER))
    {
        if ids.len() == count {
            break;
        }
        if product.stock < STOCK / 10 {
            let body = json!({"productId": product.id, "delta": STOCK});
            data::<Value>(
                conn.send(
                    Call::with_json(Method::PUT, "/api/v1/product/stock", &body).token(Some(token)),
                )
                .await,
            )
            .map_err(|e| fatal("adding stock", e))?;
        }
        ids.push(product.id);
    }
    let mut rng = fastrand::Rng::new();
    for n in ids.len()..count {
        let adjective = ADJECTIVES[n % ADJECTIVES.len()];
        let noun = NOUNS[(n / ADJECTIVES.len() + n) % NOUNS.len()];
        let cents = rng.u32(100..20_000);
        let body = json!({
            "name": format!("{adjective} {noun} {}", n + 1),
            "description": format!("A {} {} for everyday use ({MARKER} catalogue)", adjective.to_lowercase(), noun.to_lowercase()),
            "price": f64::from(cents) / 100.0,
            "stock": STOCK,
            "category": CATEGORIES[n % CATEGORIES.len()],
            "images": [format!("https://img.example.com/{MARKER}/{}.jpg", n + 1)],
            "attributes": r#"{"colour":"natural","weight":"1kg"}"#,
        });
        let created: NewProduct = data(
            conn.send(
                Call::with_json(Method::POST, "/api/v1/product/add", &body).token(Some(token)),
            )
            .await,
        )
        .map_err(|e| fatal("adding a product", e))?;
        ids.push(created.product_id);
    }
    Ok(ids)
}

/// Registers `count` new shoppers (names unique to this run) and returns their tokens.
/// Registration hashes a password (deliberately slow), so a few go at once.
pub(crate) async fn register_shoppers(
    conn: &Connection,
    count: usize,
) -> Result<Vec<String>, String> {
    const AT_ONCE: usize = 4;
    let run = fastrand::u32(..) & 0xff_ffff;
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..AT_ONCE.min(count) {
        let mut conn = conn.fresh();
        tasks.spawn(async move {
            let mut tokens = Vec::new();
            for i in (lane..count).step_by(AT_ONCE) {
                let username = format!("lg{run:06x}s{i}");
                let body = json!({
                    "username": username,
                    "password": "loadgen-shopper",
                    "email": format!("{username}@loadgen.example.com"),
                    "phone": format!("138{:08}", fastrand::u32(..100_000_000)),
                });
                let token: Token = data(
                    conn.send(Call::with_json(
                        Method::POST,
                        "/api/v1/user/register",
                        &body,
                    ))
                    .await,
                )
                .map_err(|e| fatal(&format!("registering shopper {username}"), e))?;
                tokens.push(token.token);
            }
            Ok::<_, String>(tokens)
        });
    }
    let mut tokens = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        tokens.extend(joined.map_err(|e| e.to_string())??);
    }
    Ok(tokens)
}

/// One simulated shopper on one connection.
pub struct Shopper {
    shop: Arc<Shop>,
    token: Option<String>,
    /// Product index and quantity of each line this shopper put in their cart.
    cart: Vec<(usize, u32)>,
    fixed_product: bool,
    rng: fastrand::Rng,
}

impl Shopper {
    pub fn new(shop: Arc<Shop>, number: usize, fixed_product: bool) -> Shopper {
        let token = match shop.user_tokens.len() {
            0 => None,
            n => Some(shop.user_tokens[number % n].clone()),
        };
        Shopper {
            shop,
            token,
            cart: Vec::new(),
            fixed_product,
            rng: fastrand::Rng::new(),
        }
    }

    /// The operation an action starts with, for counting one that was never sent.
    pub fn first_operation(action: Action) -> Operation {
        match action {
            Action::Browse => Operation::Browse,
            Action::Search => Operation::Search,
            Action::Detail => Operation::Detail,
            Action::Cart => Operation::CartAdd,
            Action::Checkout => Operation::OrderCreate,
        }
    }

    fn any_product(&mut self) -> usize {
        if self.fixed_product {
            0
        } else {
            self.rng.usize(..self.shop.products.len())
        }
    }

    /// Does `action` once; `began` is when it was meant to start (open loop) or did (closed).
    pub async fn act(
        &mut self,
        action: Action,
        conn: &mut Connection,
        rec: &mut Recorder,
        began: Instant,
    ) {
        match action {
            Action::Browse => {
                let mut path = format!(
                    "/api/v1/product/list?page={}&pageSize=20",
                    self.rng.u32(1..=3)
                );
                if self.rng.bool() {
                    path.push_str("&category=");
                    path.push_str(CATEGORIES[self.rng.usize(..CATEGORIES.len())]);
                }
                if self.rng.u8(..4) > 0 {
                    let sort = ["price", "created", "sales"][self.rng.usize(..3)];
                    let order = if self.rng.bool() { "asc" } else { "desc" };
                    path.push_str(&format!("&sortBy={sort}&order={order}"));
                }
                let result = conn.send(Call::get(&path)).await;
                rec.record(Operation::Browse, began, Instant::now(), outcome(result));
            }
            Action::Search => {
                let keyword = match self.rng.u8(..3) {
                    0 => ADJECTIVES[self.rng.usize(..ADJECTIVES.len())],
                    1 => NOUNS[self.rng.usize(..NOUNS.len())],
                    _ => CATEGORIES[self.rng.usize(..CATEGORIES.len())],
                };
                let path = format!(
                    "/api/v1/product/search?keyword={}&page=1&pageSize=20",
                    keyword.to_lowercase()
                );
                let result = conn.send(Call::get(&path)).await;
                rec.record(Operation::Search, began, Instant::now(), outcome(result));
            }
            Action::Detail => {
                let index = self.any_product();
                let path = format!("/api/v1/product/detail/{}", self.shop.products[index]);
                let result = conn.send(Call::get(&path)).await;
                rec.record(Operation::Detail, began, Instant::now(), outcome(result));
            }
            Action::Cart => self.add_to_cart(conn, rec, began).await,
            Action::Checkout => self.check_out(conn, rec, began).await,
        }
    }

    async fn add_to_cart(&mut self, conn: &mut Connection, rec: &mut Recorder, began: Instant) {
        let token = self.token.clone();
        let mut began = began;
        if self.cart.len() >= CART_LINES {
            let call = Call {
                method: Method::DELETE,
                path: "/api/v1/cart/clear",
                token: token.as_deref(),
                json: None,
                header: None,
            };
            let result = conn.send(call).await;
            let ended = Instant::now();
            rec.record(Operation::CartClear, began, ended, outcome(result));
            self.cart.clear();
            began = ended;
        }
        let index = self.any_product();
        let quantity = self.rng.u32(1..=3);
        let body = json!({"productId": self.shop.products[index], "quantity": quantity});
        let result = conn
            .send(Call::with_json(Method::POST, "/api/v1/cart/add", &body).token(token.as_deref()))
            .await;
        let result = outcome(result);
        if result.is_ok() {
            match self.cart.iter_mut().find(|(i, _)| *i == index) {
                Some((_, q)) if *q + quantity <= 999 => *q += quantity,
                Some(_) => self.cart.clear(),
                None => self.cart.push((index, quantity)),
            }
        }
        rec.record(Operation::CartAdd, began, Instant::now(), result);
    }

    /// Orders what is in the cart (or one product, when it is empty), then pays the total.
    async fn check_out(&mut self, conn: &mut Connection, rec: &mut Recorder, began: Instant) {
        let token = self.token.clone();
        let mut lines = std::mem::take(&mut self.cart);
        if lines.is_empty() {
            lines.push((self.any_product(), self.rng.u32(1..=2)));
        }
        let items: Vec<Value> = lines
            .iter()
            .map(|&(i, q)| json!({"productId": self.shop.products[i], "quantity": q}))
            .collect();
        let body = json!({
            "items": items,
            "address": "12 Harbour Road, Pudong, Shanghai",
            "phone": "13800138000",
            "remark": "loadgen",
        });
        let result = conn
            .send(
                Call::with_json(Method::POST, "/api/v1/order/create", &body)
                    .token(token.as_deref()),
            )
            .await;
        let ordered_at = Instant::now();
        let order: Result<NewOrder, String> = data(result);
        let order = match order {
            Ok(order) => {
                rec.record(Operation::OrderCreate, began, ordered_at, Ok(()));
                order
            }
            Err(label) => {
                let sold_out = label.ends_with("/3001");
                rec.record(
                    Operation::OrderCreate,
                    began,
                    ordered_at,
                    Err(label.clone()),
                );
                rec.record(Operation::Checkout, began, ordered_at, Err(label));
                if sold_out {
                    for &(i, _) in &lines {
                        self.shop.restock(conn, rec, i).await;
                    }
                }
                return;
            }
        };
        let body = json!({
            "orderId": order.order_id,
            "paymentType": self.rng.i32(1..=3),
            "amount": order.total_amount,
        });
        let key = format!("lg-{}-{:016x}", order.order_id, self.rng.u64(..));
        let result = conn
            .send(
                Call::with_json(Method::POST, "/api/v1/payment/create", &body)
                    .token(token.as_deref())
                    .header(HeaderName::from_static("idempotency-key"), key),
            )
            .await;
        let paid_at = Instant::now();
        let result = outcome(result);
        rec.record(
            Operation::PaymentCreate,
            ordered_at,
            paid_at,
            result.clone(),
        );
        rec.record(Operation::Checkout, began, paid_at, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use hyper::body::Bytes;

    fn reply(status: u16, body: &'static str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn answers_are_labelled_by_status_and_envelope_code() {
        assert_eq!(
            failure_label(&reply(200, r#"{"code":0,"msg":"success","data":{}}"#)),
            None
        );
        assert_eq!(
            failure_label(&reply(200, r#"{ "code": 0, "data": null }"#)),
            None
        );
        assert_eq!(
            failure_label(&reply(
                409,
                r#"{"code":3001,"msg":"out of stock","data":null}"#
            )),
            Some("409/3001".to_owned())
        );
        assert_eq!(
            failure_label(&reply(502, "Bad Gateway")),
            Some("502".to_owned())
        );
        let order: Result<NewOrder, String> = data(Ok(reply(
            200,
            r#"{"code":0,"msg":"success","data":{"orderId":7,"orderNo":"LG1","totalAmount":19.9}}"#,
        )));
        let order = order.unwrap();
        assert_eq!(order.order_id, 7);
        assert_eq!(order.total_amount.to_string(), "19.9");
    }
}
