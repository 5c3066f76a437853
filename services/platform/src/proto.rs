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

pub use letsgo_facts::limits::{CALLBACK_BODY_MAX_BYTES, IDEMPOTENCY_KEY_MAX_CHARS};
