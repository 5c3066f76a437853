//! The gRPC face of the service: maps proto messages to [`Orders`] calls and back.

use letsgo_platform::proto::order::v1::{self as pb, order_service_server::OrderService};
use tonic::{Request, Response, Status};

use crate::orders::{OrderRequest, Orders, Page};
use crate::storage::OrderWithItems;

pub struct OrderApi {
    orders: Orders,
}

impl OrderApi {
    pub fn new(orders: Orders) -> Self {
        OrderApi { orders }
    }
}

fn unix(time: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
    time.map(|time| time.timestamp()).unwrap_or(0)
}

fn order_message(found: OrderWithItems) -> pb::Order {
    let order = found.order;
    pb::Order {
        id: order.id,
        user_id: order.user_id,
        order_no: order.order_no,
        total_amount_cents: order.total_amount_cents,
        status: i32::from(order.status),
        address: order.address,
        phone: order.phone,
        remark: order.remark,
        items: found
            .items
            .into_iter()
            .map(|item| pb::OrderItem {
                id: item.id,
                product_id: item.product_id,
                name: item.name,
                price_cents: item.price_cents,
                quantity: item.quantity,
                image: item.image,
            })
            .collect(),
        created_at: order.created_at.timestamp(),
        updated_at: order.updated_at.timestamp(),
        paid_at: unix(order.paid_at),
        shipped_at: unix(order.shipped_at),
        completed_at: unix(order.completed_at),
        refunded_at: unix(order.refunded_at),
        carrier: order.carrier,
        tracking_no: order.tracking_no,
    }
}

fn page_message(page: Page) -> pb::OrderPage {
    pb::OrderPage {
        total: page.total,
        orders: page.orders.into_iter().map(order_message).collect(),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderReply>, Status> {
        let request = request.into_inner();
        let created = self
            .orders
            .create(OrderRequest {
                user_id: request.user_id,
                lines: request
                    .items
                    .iter()
                    .map(|line| (line.product_id, line.quantity))
                    .collect(),
                address: request.address,
                phone: request.phone,
                remark: request.remark,
            })
            .await?;
        Ok(Response::new(pb::CreateOrderReply {
            order_id: created.id,
            order_no: created.order_no,
            total_amount_cents: created.total_amount_cents,
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::OrderPage>, Status> {
        let request = request.into_inner();
        let page = self
            .orders
            .list(
                request.user_id,
                request.status,
                request.page,
                request.page_size,
            )
            .await?;
        Ok(Response::new(page_message(page)))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let request = request.into_inner();
        let order = self.orders.get(request.user_id, request.order_id).await?;
        Ok(Response::new(order_message(order)))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderReply>, Status> {
        let request = request.into_inner();
        self.orders
            .cancel(request.user_id, request.order_id)
            .await?;
        Ok(Response::new(pb::CancelOrderReply {}))
    }

    async fn list_all_orders(
        &self,
        request: Request<pb::ListAllOrdersRequest>,
    ) -> Result<Response<pb::OrderPage>, Status> {
        let request = request.into_inner();
        let page = self
            .orders
            .list_all(
                request.status,
                &request.keyword,
                request.page,
                request.page_size,
            )
            .await?;
        Ok(Response::new(page_message(page)))
    }

    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderReply>, Status> {
        let request = request.into_inner();
        self.orders
            .ship(request.order_id, &request.carrier, &request.tracking_no)
            .await?;
        Ok(Response::new(pb::ShipOrderReply {}))
    }

    async fn confirm_receipt(
        &self,
        request: Request<pb::ConfirmReceiptRequest>,
    ) -> Result<Response<pb::ConfirmReceiptReply>, Status> {
        let request = request.into_inner();
        self.orders
            .confirm_receipt(request.user_id, request.order_id)
            .await?;
        Ok(Response::new(pb::ConfirmReceiptReply {}))
    }
}
