//! The ordered products leave their buyers' carts in batches: the orders that finish while
//! one call to the cart service is out share the next (`RemoveProductsOfCarts`, one pipelined
//! round trip to Redis), where each order used to make a call of its own. A lone order's call
//! goes at once, alone. A cart service without the batch call (an older version, during an
//! upgrade) is asked cart by cart.
//!
//! An order waits for its cart at most [`WAIT`]: a cart service that is slow or away costs an
//! order no more than that (the removal goes on, or fails, after the order is answered), and a
//! full queue leaves the products in the cart. Either way the order stands.

use std::time::Duration;

use futures_util::future::join_all;
use letsgo_platform::batches::{Batches, Shape};
use letsgo_platform::discovery::RpcChannel;
use letsgo_platform::proto::cart::v1::{
    RemoveProductsOfCartsRequest, RemoveProductsRequest, cart_service_client::CartServiceClient,
};
use tonic::Code;

/// The longest an order waits for its products to leave the cart.
pub const WAIT: Duration = Duration::from_secs(1);
/// The most carts one call changes (the cart service takes up to 1,000).
const BATCH_MAX: usize = 256;
/// Removals waiting for the call in flight; beyond it an order leaves its products in the cart
/// (the order itself stands).
const QUEUE_MAX: usize = 4096;

/// The queue of carts to clear of ordered products, and the worker that clears them in
/// batches.
#[derive(Clone)]
pub struct CartRemovals {
    batches: Batches<RemoveProductsRequest, Result<(), String>>,
}

impl CartRemovals {
    /// Starts the worker on the current runtime, calling the cart service through `carts`.
    pub fn start(carts: CartServiceClient<RpcChannel>) -> CartRemovals {
        let shape = Shape {
            lanes: 1,
            queue_max: QUEUE_MAX,
            batch_max: BATCH_MAX,
        };
        let batches = Batches::start(
            shape,
            |_| 0,
            move |removals| {
                let carts = carts.clone();
                async move { remove_batch(carts, removals).await }
            },
        );
        CartRemovals { batches }
    }

    /// Takes `product_ids` out of `user_id`'s cart, with the other orders of the moment.
    /// Absent lines are no error; an error says why the cart could not be changed, or that it
    /// was not changed within [`WAIT`].
    pub async fn remove(&self, user_id: i64, product_ids: Vec<i64>) -> Result<(), String> {
        let removal = RemoveProductsRequest {
            user_id,
            product_ids,
        };
        match tokio::time::timeout(WAIT, self.batches.ask(removal)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Err(error.message),
            Err(_) => Err(format!(
                "the cart service did not answer within {} ms; the removal goes on without the order",
                WAIT.as_millis()
            )),
        }
    }
}

/// Removes a batch in one call, or cart by cart from a cart service that has no batch call;
/// answers how it went for each cart, in their order.
async fn remove_batch(
    carts: CartServiceClient<RpcChannel>,
    removals: Vec<RemoveProductsRequest>,
) -> Vec<Result<(), String>> {
    if removals.len() > 1 {
        let request = RemoveProductsOfCartsRequest {
            carts: removals.clone(),
        };
        match carts.clone().remove_products_of_carts(request).await {
            Ok(_) => return removals.iter().map(|_| Ok(())).collect(),
            Err(status) if status.code() == Code::Unimplemented => {}
            Err(status) => {
                return removals
                    .iter()
                    .map(|_| Err(status.message().to_owned()))
                    .collect();
            }
        }
    }
    join_all(removals.into_iter().map(|removal| {
        let mut carts = carts.clone();
        async move {
            carts
                .remove_products(removal)
                .await
                .map(|_| ())
                .map_err(|status| status.message().to_owned())
        }
    }))
    .await
}
