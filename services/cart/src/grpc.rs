//! The gRPC face of the service: maps proto messages to [`Carts`] calls and back.

use letsgo_platform::proto::cart::v1::{self as pb, cart_service_server::CartService};
use tonic::{Request, Response, Status};

use crate::carts::Carts;

pub struct CartApi {
    carts: Carts,
}

impl CartApi {
    pub fn new(carts: Carts) -> Self {
        CartApi { carts }
    }
}

#[tonic::async_trait]
impl CartService for CartApi {
    async fn get_cart(
        &self,
        request: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::Cart>, Status> {
        let cart = self.carts.get(request.into_inner().user_id).await?;
        Ok(Response::new(pb::Cart {
            items: cart
                .lines
                .into_iter()
                .map(|line| pb::CartItem {
                    product_id: line.product.id,
                    image: line.product.images.first().cloned().unwrap_or_default(),
                    name: line.product.name,
                    price_cents: line.product.price_cents,
                    quantity: line.quantity,
                    stock: line.product.stock,
                })
                .collect(),
            total_price_cents: cart.total_price_cents,
            total_count: cart.total_count,
        }))
    }

    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        let request = request.into_inner();
        self.carts
            .add(request.user_id, request.product_id, request.quantity)
            .await?;
        Ok(Response::new(pb::CartReply {}))
    }

    async fn update_item(
        &self,
        request: Request<pb::UpdateItemRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        let request = request.into_inner();
        self.carts
            .update(request.user_id, request.product_id, request.quantity)
            .await?;
        Ok(Response::new(pb::CartReply {}))
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        let request = request.into_inner();
        self.carts
            .remove(request.user_id, request.product_id)
            .await?;
        Ok(Response::new(pb::CartReply {}))
    }

    async fn clear_cart(
        &self,
        request: Request<pb::ClearCartRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        self.carts.clear(request.into_inner().user_id).await?;
        Ok(Response::new(pb::CartReply {}))
    }

    async fn remove_products(
        &self,
        request: Request<pb::RemoveProductsRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        let request = request.into_inner();
        self.carts
            .remove_products(request.user_id, &request.product_ids)
            .await?;
        Ok(Response::new(pb::CartReply {}))
    }

    async fn remove_products_of_carts(
        &self,
        request: Request<pb::RemoveProductsOfCartsRequest>,
    ) -> Result<Response<pb::CartReply>, Status> {
        let carts: Vec<(i64, Vec<i64>)> = request
            .into_inner()
            .carts
            .into_iter()
            .map(|cart| (cart.user_id, cart.product_ids))
            .collect();
        self.carts.remove_products_of_carts(&carts).await?;
        Ok(Response::new(pb::CartReply {}))
    }
}
