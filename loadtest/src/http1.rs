//! A minimal HTTP/1.1 keep-alive client: one TCP connection per simulated
//! client, driven by hyper's low-level connection API (no pool, so C clients
//! are exactly C connections). No TLS, no redirects, no retries.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::Target;

pub(crate) struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    /// Sent as `Authorization: Bearer ...` on every request when set.
    bearer: Option<String>,
}

impl HttpConn {
    pub(crate) async fn connect(target: &Target) -> anyhow::Result<HttpConn> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when `sender` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn {
            sender,
            authority: target.authority.clone(),
            bearer: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` from now on (none if empty).
    pub(crate) fn set_bearer(&mut self, token: &str) {
        self.bearer = (!token.is_empty()).then(|| token.to_string());
    }

    /// Sends one request and reads the whole response body.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        if let Some(b) = &self.bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {b}"));
        }
        let req = req.body(Full::new(body))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub(crate) async fn post_json(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, Some("application/json"), body)
            .await
    }

    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, None, Bytes::new()).await
    }
}

/// One GET on a fresh connection; the body as text if the status is 2xx.
pub(crate) async fn get_text(target: &Target, path: &str) -> anyhow::Result<String> {
    let mut conn = HttpConn::connect(target).await?;
    let (status, body) = conn.get(path).await?;
    if !status.is_success() {
        anyhow::bail!("GET {path}: HTTP {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
