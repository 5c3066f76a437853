//! The gRPC face of the service: maps proto messages to [`Catalogue`] calls and back.

use letsgo_platform::errors::AppError;
use letsgo_platform::proto::product::v1::{
    self as pb, change_stock_request::Change, product_service_server::ProductService,
};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::rules;
use crate::storage::{
    NewProduct, ProductChange, ProductRecord, ReviewRecord, SortKey, StockChange,
};

pub struct ProductApi {
    catalogue: Arc<Catalogue>,
}

impl ProductApi {
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        ProductApi { catalogue }
    }
}

fn product_message(record: ProductRecord) -> pb::Product {
    let rating_average = if record.rating_count > 0 {
        // One decimal, as shops show it.
        (record.rating_sum as f64 / record.rating_count as f64 * 10.0).round() / 10.0
    } else {
        0.0
    };
    pb::Product {
        id: record.id,
        name: record.name,
        description: record.description,
        price_cents: record.price_cents,
        stock: record.stock,
        category: record.category,
        images: record.images,
        attributes: record.attributes,
        sales: record.sales,
        created_at: record.created_at.timestamp(),
        updated_at: record.updated_at.timestamp(),
        rating_average,
        rating_count: record.rating_count,
        listed: record.listed,
    }
}

fn review_message(record: ReviewRecord) -> pb::Review {
    pb::Review {
        id: record.id,
        product_id: record.product_id,
        user_id: record.user_id,
        rating: record.rating,
        comment: record.comment,
        created_at: record.created_at.timestamp(),
    }
}

fn page_message(page: crate::catalogue::Page<ProductRecord>) -> pb::ProductPage {
    pb::ProductPage {
        total: page.total,
        products: page.items.into_iter().map(product_message).collect(),
    }
}

#[tonic::async_trait]
impl ProductService for ProductApi {
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ProductPage>, Status> {
        let request = request.into_inner();
        let sort = match pb::SortBy::try_from(request.sort_by).unwrap_or_default() {
            pb::SortBy::Price => SortKey::Price,
            pb::SortBy::Sales => SortKey::Sales,
            pb::SortBy::Created | pb::SortBy::Unspecified => SortKey::Created,
        };
        let page = self
            .catalogue
            .list(
                &request.category,
                sort,
                request.ascending,
                request.include_unlisted,
                request.page,
                request.page_size,
            )
            .await?;
        Ok(Response::new(page_message(page)))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let product = self.catalogue.get(request.into_inner().id).await?;
        Ok(Response::new(product_message(product)))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsReply>, Status> {
        let products = self.catalogue.batch_get(&request.into_inner().ids).await?;
        Ok(Response::new(pb::BatchGetProductsReply {
            products: products.into_iter().map(product_message).collect(),
        }))
    }

    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::ProductPage>, Status> {
        let request = request.into_inner();
        let page = self
            .catalogue
            .search(
                &request.keyword,
                request.include_unlisted,
                request.page,
                request.page_size,
            )
            .await?;
        Ok(Response::new(page_message(page)))
    }

    async fn add_product(
        &self,
        request: Request<pb::AddProductRequest>,
    ) -> Result<Response<pb::AddProductReply>, Status> {
        let request = request.into_inner();
        let product_id = self
            .catalogue
            .add(NewProduct {
                attributes: rules::parse_attributes(&request.attributes)?,
                name: request.name.trim().to_owned(),
                description: request.description,
                price_cents: request.price_cents,
                stock: request.stock,
                category: request.category.trim().to_owned(),
                images: request.images,
            })
            .await?;
        Ok(Response::new(pb::AddProductReply { product_id }))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductReply>, Status> {
        let request = request.into_inner();
        let attributes = request
            .attributes
            .as_deref()
            .map(rules::parse_attributes)
            .transpose()?;
        self.catalogue
            .update(
                request.id,
                ProductChange {
                    name: request.name.map(|name| name.trim().to_owned()),
                    description: request.description,
                    price_cents: request.price_cents,
                    category: request.category.map(|category| category.trim().to_owned()),
                    images: request.images.map(|list| list.values),
                    attributes,
                },
            )
            .await?;
        Ok(Response::new(pb::UpdateProductReply {}))
    }

    async fn change_stock(
        &self,
        request: Request<pb::ChangeStockRequest>,
    ) -> Result<Response<pb::ChangeStockReply>, Status> {
        let request = request.into_inner();
        let change = match request.change {
            Some(Change::SetTo(stock)) => StockChange::SetTo(stock),
            Some(Change::Delta(delta)) => StockChange::Delta(delta),
            None => return Err(AppError::invalid("give either stock or delta").into()),
        };
        let stock = self
            .catalogue
            .change_stock(request.product_id, change)
            .await?;
        Ok(Response::new(pb::ChangeStockReply { stock }))
    }

    async fn set_product_listed(
        &self,
        request: Request<pb::SetProductListedRequest>,
    ) -> Result<Response<pb::SetProductListedReply>, Status> {
        let request = request.into_inner();
        self.catalogue
            .set_listed(request.product_id, request.listed)
            .await?;
        Ok(Response::new(pb::SetProductListedReply {}))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockReply>, Status> {
        let request = request.into_inner();
        let lines: Vec<(i64, i64)> = request
            .lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect();
        let held = self.catalogue.reserve(request.order_id, &lines).await?;
        Ok(Response::new(pb::ReserveStockReply {
            lines: held
                .into_iter()
                .map(|line| pb::ReservedLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    name: line.name,
                    price_cents: line.price_cents,
                    image: line.image,
                })
                .collect(),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationReply>, Status> {
        self.catalogue
            .commit_reservation(request.into_inner().order_id)
            .await?;
        Ok(Response::new(pb::CommitReservationReply {}))
    }

    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockReply>, Status> {
        self.catalogue
            .release(&[request.into_inner().order_id])
            .await?;
        Ok(Response::new(pb::ReleaseStockReply {}))
    }

    async fn release_reservations(
        &self,
        request: Request<pb::ReleaseReservationsRequest>,
    ) -> Result<Response<pb::ReleaseReservationsReply>, Status> {
        self.catalogue
            .release(&request.into_inner().order_ids)
            .await?;
        Ok(Response::new(pb::ReleaseReservationsReply {}))
    }

    async fn record_sales(
        &self,
        request: Request<pb::RecordSalesRequest>,
    ) -> Result<Response<pb::RecordSalesReply>, Status> {
        self.catalogue
            .record_sales(&[request.into_inner().order_id])
            .await?;
        Ok(Response::new(pb::RecordSalesReply {}))
    }

    async fn commit_reservations(
        &self,
        request: Request<pb::CommitReservationsRequest>,
    ) -> Result<Response<pb::CommitReservationsReply>, Status> {
        let lost_order_ids = self
            .catalogue
            .commit_reservations(&request.into_inner().order_ids)
            .await?;
        Ok(Response::new(pb::CommitReservationsReply {
            lost_order_ids,
        }))
    }

    async fn record_sales_of_orders(
        &self,
        request: Request<pb::RecordSalesOfOrdersRequest>,
    ) -> Result<Response<pb::RecordSalesOfOrdersReply>, Status> {
        self.catalogue
            .record_sales(&request.into_inner().order_ids)
            .await?;
        Ok(Response::new(pb::RecordSalesOfOrdersReply {}))
    }

    async fn add_review(
        &self,
        request: Request<pb::AddReviewRequest>,
    ) -> Result<Response<pb::AddReviewReply>, Status> {
        let request = request.into_inner();
        let review_id = self
            .catalogue
            .review(
                request.product_id,
                request.user_id,
                request.rating,
                &request.comment,
            )
            .await?;
        Ok(Response::new(pb::AddReviewReply { review_id }))
    }

    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ReviewPage>, Status> {
        let request = request.into_inner();
        let page = self
            .catalogue
            .reviews(request.product_id, request.page, request.page_size)
            .await?;
        Ok(Response::new(pb::ReviewPage {
            total: page.total,
            reviews: page.items.into_iter().map(review_message).collect(),
        }))
    }
}
