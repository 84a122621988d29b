//! A bare HTTP/1.1 keep-alive client for load generation: one connection, one request at a
//! time, requests written as prepared bytes and answers read by `Content-Length`.
//!
//! A general client (reqwest: its pool, header maps, URL parsing, a task per connection) took
//! about 120 µs of CPU per request on the benchmark machine, where the server it measured took
//! about 160: on two cores shared with the server and Postgres, the load generator was a fifth
//! of the machine. This one does a `write` and a `read` per request and parses the answer's
//! head in place. It speaks only what Workledger's API answers with (a body of known length),
//! and fails clearly on anything else.

use std::net::SocketAddr;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, for a 2xx answer; an error naming the status and body otherwise.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        ensure!(
            (200..300).contains(&self.status),
            "{} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).context("the answer is not JSON")
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed (the start of the next answer, if the server sent
    /// more than one answer's worth; it does not, one request being in flight at a time).
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` (from [`request`]) and reads its answer.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.stream.write_all(request).await?;
        let (status, head_len, body_len) = loop {
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
            self.fill().await?;
        };
        while self.buffer.len() < head_len + body_len {
            self.fill().await?;
        }
        let body = self.buffer[head_len..head_len + body_len].to_vec();
        self.buffer.drain(..head_len + body_len);
        Ok(Answer { status, body })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The status, head length and body length of the answer at the start of `buffer`, once its
/// head is complete.
fn parse_head(buffer: &[u8]) -> anyhow::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(buffer)? else {
        return Ok(None);
    };
    let status = response.code.context("an answer without a status")?;
    let mut body_len = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body_len = Some(std::str::from_utf8(header.value)?.trim().parse()?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer (status {status}): this client reads only sized bodies");
        }
    }
    Ok(Some((status, head_len, body_len.unwrap_or(0))))
}

/// The bytes of a request with a JSON `body` and a bearer `token`.
pub fn request(method: &str, host: &str, path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_by_content_length() {
        let answer = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_head(answer).unwrap(),
            Some((201, answer.len() - 2, 2))
        );
        assert_eq!(parse_head(&answer[..20]).unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Some((204, 27, 0))
        );
    }
}
