//! The gRPC contracts of `proto/`, compiled by tonic. One module per service package.

pub mod user {
    pub mod v1 {
        tonic::include_proto!("letsgo.user.v1");
    }
}
pub mod product {
    pub mod v1 {
        tonic::include_proto!("letsgo.product.v1");
    }
}
pub mod cart {
    pub mod v1 {
        tonic::include_proto!("letsgo.cart.v1");
    }
}
pub mod order {
    pub mod v1 {
        tonic::include_proto!("letsgo.order.v1");
    }
}
pub mod payment {
    pub mod v1 {
        tonic::include_proto!("letsgo.payment.v1");
    }
}

/// Every letsgo package's descriptors, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("letsgo_descriptor");

/// Largest payment-provider callback body the shop reads: a real one is a few hundred bytes.
/// The gateway refuses more with 413 before forwarding; the payment service checks it again
/// before verifying the signature (each MAC hashes the whole body).
pub const CALLBACK_BODY_MAX_BYTES: usize = 4 * 1024;

/// Longest `Idempotency-Key` a client may send (UUIDs and similar fit with room): the gateway
/// refuses a longer one before calling the payment service, which checks it again.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 128;
