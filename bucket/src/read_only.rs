//! The one way Quarry's object stores refuse to change what they serve.
//!
//! The engines read evidence through object stores of Quarry's own (a local store's sealed
//! segments, a bucket's vouched segments, the cluster's view of a bucket). Each answers reads
//! its own way, and all of them refuse every put, multipart upload, delete and copy, whatever
//! plan the engine runs. [`read_only_object_store!`](crate::read_only_object_store) writes
//! the refusals once; the caller gives the reads.

/// Implements `object_store::ObjectStore` for `$store`: `$refusal()` (an
/// `object_store::Error`) answers every put, multipart upload, delete and copy; the methods
/// given in braces (`get_opts`, `list`, `list_with_delimiter`) are the reads. The calling
/// crate depends on `async-trait`, `futures` and `object_store`.
#[macro_export]
macro_rules! read_only_object_store {
    ($store:ty, $refusal:path, { $($reads:tt)* }) => {
        #[::async_trait::async_trait]
        impl ::object_store::ObjectStore for $store {
            async fn put_opts(
                &self,
                _location: &::object_store::path::Path,
                _payload: ::object_store::PutPayload,
                _opts: ::object_store::PutOptions,
            ) -> ::object_store::Result<::object_store::PutResult> {
                Err($refusal())
            }

            async fn put_multipart_opts(
                &self,
                _location: &::object_store::path::Path,
                _opts: ::object_store::PutMultipartOptions,
            ) -> ::object_store::Result<Box<dyn ::object_store::MultipartUpload>> {
                Err($refusal())
            }

            fn delete_stream(
                &self,
                locations: ::futures::stream::BoxStream<
                    'static,
                    ::object_store::Result<::object_store::path::Path>,
                >,
            ) -> ::futures::stream::BoxStream<
                'static,
                ::object_store::Result<::object_store::path::Path>,
            > {
                ::futures::StreamExt::boxed(::futures::StreamExt::map(locations, |_| {
                    Err($refusal())
                }))
            }

            async fn copy_opts(
                &self,
                _from: &::object_store::path::Path,
                _to: &::object_store::path::Path,
                _options: ::object_store::CopyOptions,
            ) -> ::object_store::Result<()> {
                Err($refusal())
            }

            $($reads)*
        }
    };
}
