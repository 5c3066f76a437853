//! The gRPC face of the service: maps proto messages to [`Payments`] calls and back.

use letsgo_platform::proto::payment::v1::{self as pb, payment_service_server::PaymentService};
use tonic::{Request, Response, Status};

use crate::payments::{CallbackResult, CreatePayment, Payments};
use crate::storage::PaymentRecord;

pub struct PaymentApi {
    payments: std::sync::Arc<Payments>,
}

impl PaymentApi {
    pub fn new(payments: std::sync::Arc<Payments>) -> Self {
        PaymentApi { payments }
    }
}

fn payment_message(record: PaymentRecord) -> pb::Payment {
    pb::Payment {
        payment_id: record.id,
        payment_no: record.payment_no,
        order_id: record.order_id,
        status: i32::from(record.status),
        amount_cents: record.amount_cents,
        payment_type: i32::from(record.payment_type),
        paid_at: record.paid_at.map_or(0, |paid_at| paid_at.timestamp()),
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn create_payment(
        &self,
        request: Request<pb::CreatePaymentRequest>,
    ) -> Result<Response<pb::CreatePaymentReply>, Status> {
        let request = request.into_inner();
        let created = self
            .payments
            .create(CreatePayment {
                user_id: request.user_id,
                order_id: request.order_id,
                payment_type: request.payment_type,
                amount_cents: request.amount_cents,
                idempotency_key: request.idempotency_key,
            })
            .await?;
        Ok(Response::new(pb::CreatePaymentReply {
            payment_id: created.payment_id,
            payment_no: created.payment_no,
            pay_url: created.pay_url,
            qr_code: created.qr_code,
        }))
    }

    async fn query_payment(
        &self,
        request: Request<pb::QueryPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let request = request.into_inner();
        let payment = self
            .payments
            .latest(request.user_id, request.order_id)
            .await?;
        Ok(Response::new(payment_message(payment)))
    }

    async fn handle_callback(
        &self,
        request: Request<pb::HandleCallbackRequest>,
    ) -> Result<Response<pb::HandleCallbackReply>, Status> {
        let request = request.into_inner();
        let result = self
            .payments
            .handle_callback(&request.raw_body, &request.signature)
            .await?;
        let message = match result {
            CallbackResult::Settled => "success",
            CallbackResult::AlreadyProcessed => "already processed",
        };
        Ok(Response::new(pb::HandleCallbackReply {
            success: true,
            message: message.to_owned(),
        }))
    }
}
