use crate::ApiError;

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
