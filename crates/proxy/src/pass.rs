//! Pass-through IO: the `AsyncRead`/`AsyncWrite` methods an IO wrapper hands to the stream
//! it wraps, written once.
//!
//! Owns: [`pass_through!`](crate::pass::pass_through), which expands, inside an
//! `impl AsyncRead for W` or `impl AsyncWrite for W` block, to the methods that only
//! forward to the inner stream. The wrapper names the stream with patterns over `Self`
//! (one per enum variant, or one struct pattern) binding it to the same identifier; each
//! method matches on `self` and calls the stream's own method, pinned with `Pin::new`
//! (so the inner stream is `Unpin`; a `Box` of one forwards every method too).
//! The forms:
//! - `read [PATTERNS] => s`: `poll_read`;
//! - `read [PATTERNS] => s, then HOOK`: `poll_read` that hands the inner read's result to
//!   the wrapper's method `HOOK(&mut self, cx, buf, filled, result)` (`filled`: how much
//!   of `buf` was filled before the read) and returns what it returns;
//! - `write [PATTERNS] => s`: every `AsyncWrite` method (`poll_write`,
//!   `poll_write_vectored`, `is_write_vectored`, `poll_flush`, `poll_shutdown`);
//! - `write_rest [PATTERNS] => s`: all but `poll_write` and `poll_write_vectored`, for a
//!   wrapper that acts on writes (`idle`).
//!
//! Users: `tls::MaybeTls`, `idle::IdleIo`, `guard::Guarded`, `http::h1::Rewind`.
//! Does not own: what any wrapper adds. A leaf: imports nothing of the crate.

/// See the module doc.
macro_rules! pass_through {
    (read [$($pat:pat),+] => $s:ident) => {
        fn poll_read(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &mut ::tokio::io::ReadBuf<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            match self.get_mut() {
                $($pat => ::tokio::io::AsyncRead::poll_read(::std::pin::Pin::new($s), cx, buf),)+
            }
        }
    };
    (read [$($pat:pat),+] => $s:ident, then $hook:ident) => {
        fn poll_read(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &mut ::tokio::io::ReadBuf<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            let filled = buf.filled().len();
            let this = self.get_mut();
            let res = match &mut *this {
                $($pat => ::tokio::io::AsyncRead::poll_read(::std::pin::Pin::new($s), cx, buf),)+
            };
            this.$hook(cx, buf, filled, res)
        }
    };
    (write [$($pat:pat),+] => $s:ident) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            data: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            match self.get_mut() {
                $($pat => ::tokio::io::AsyncWrite::poll_write(::std::pin::Pin::new($s), cx, data),)+
            }
        }

        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            match self.get_mut() {
                $($pat => {
                    ::tokio::io::AsyncWrite::poll_write_vectored(::std::pin::Pin::new($s), cx, bufs)
                })+
            }
        }

        $crate::pass::pass_through!(write_rest [$($pat),+] => $s);
    };
    (write_rest [$($pat:pat),+] => $s:ident) => {
        fn is_write_vectored(&self) -> bool {
            match self {
                $($pat => ::tokio::io::AsyncWrite::is_write_vectored($s),)+
            }
        }

        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            match self.get_mut() {
                $($pat => ::tokio::io::AsyncWrite::poll_flush(::std::pin::Pin::new($s), cx),)+
            }
        }

        fn poll_shutdown(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            match self.get_mut() {
                $($pat => ::tokio::io::AsyncWrite::poll_shutdown(::std::pin::Pin::new($s), cx),)+
            }
        }
    };
}

pub(crate) use pass_through;
