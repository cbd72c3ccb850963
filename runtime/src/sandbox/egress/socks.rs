//! SOCKS5 (RFC 1928): no authentication, `CONNECT` only.

use std::net::{Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{open, Ctx, OpenError};

/// The first byte of every SOCKS5 greeting.
pub(super) const VERSION: u8 = 0x05;

const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_V4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// Reply codes.
const SUCCEEDED: u8 = 0x00;
const GENERAL_FAILURE: u8 = 0x01;
const NOT_ALLOWED: u8 = 0x02;
const NETWORK_UNREACHABLE: u8 = 0x03;
const HOST_UNREACHABLE: u8 = 0x04;
const CONNECTION_REFUSED: u8 = 0x05;
const COMMAND_NOT_SUPPORTED: u8 = 0x07;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

/// What the client asked for, or the reply that ends the handshake.
pub(crate) enum Request {
    Connect(String, u16),
    Fail(u8),
}

pub(super) async fn serve(ctx: &Ctx, mut client: TcpStream) {
    session(ctx, &mut client).await;
    super::linger(&mut client).await;
}

async fn session(ctx: &Ctx, client: &mut TcpStream) {
    let req = match tokio::time::timeout(ctx.opts.handshake_timeout, handshake(client)).await {
        Ok(Ok(Some(r))) => r,
        // Timed out, broken, or not SOCKS5 at all: just close.
        _ => return,
    };
    let (host, port) = match req {
        Request::Connect(h, p) => (h, p),
        Request::Fail(code) => {
            let _ = reply(client, code).await;
            return;
        }
    };
    let mut upstream = match open(ctx, &host, port).await {
        Ok(s) => s,
        Err(e) => {
            let code = match e {
                OpenError::Refused(_) => NOT_ALLOWED,
                OpenError::Unreachable(_, Some(std::io::ErrorKind::ConnectionRefused)) => {
                    CONNECTION_REFUSED
                }
                OpenError::Unreachable(_, Some(std::io::ErrorKind::NetworkUnreachable)) => {
                    NETWORK_UNREACHABLE
                }
                OpenError::Unreachable(..) | OpenError::Timeout(_) => HOST_UNREACHABLE,
            };
            let _ = reply(client, code).await;
            return;
        }
    };
    if reply(client, SUCCEEDED).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(client, &mut upstream).await;
}

/// Greeting, method selection and request. `Ok(None)`: close without a reply (not SOCKS5, or no acceptable
/// method, which has been answered).
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut S,
) -> std::io::Result<Option<Request>> {
    let mut hdr = [0u8; 2];
    c.read_exact(&mut hdr).await?;
    if hdr[0] != VERSION {
        return Ok(None);
    }
    let mut methods = vec![0u8; hdr[1] as usize];
    c.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        c.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Ok(None);
    }
    c.write_all(&[VERSION, NO_AUTH]).await?;
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    let [ver, cmd, _rsv, atyp] = req;
    if ver != VERSION {
        return Ok(None);
    }
    let host = match atyp {
        ATYP_V4 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        ATYP_V6 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            c.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            c.read_exact(&mut name).await?;
            match String::from_utf8(name) {
                Ok(n) => n,
                Err(_) => return Ok(Some(Request::Fail(GENERAL_FAILURE))),
            }
        }
        _ => return Ok(Some(Request::Fail(ADDRESS_TYPE_NOT_SUPPORTED))),
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port).await?;
    if cmd != CMD_CONNECT {
        return Ok(Some(Request::Fail(COMMAND_NOT_SUPPORTED)));
    }
    Ok(Some(Request::Connect(host, u16::from_be_bytes(port))))
}

/// A reply; the bound address is always given as 0.0.0.0:0 (the host's addresses are none of the sandbox's
/// business, and clients do not use it for CONNECT).
async fn reply(c: &mut TcpStream, code: u8) -> std::io::Result<()> {
    c.write_all(&[VERSION, code, 0x00, ATYP_V4, 0, 0, 0, 0, 0, 0])
        .await?;
    c.flush().await
}
