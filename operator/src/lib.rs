//! The letsgo operator: reconciles a `Store` custom resource into a running shop.
//!
//! Nothing is here yet; the `Store` types, the manifest builders and the reconciler arrive with
//! the operator issue. The crate exists now so the workspace has the layout the design fixes.
