//! Builders for the messages sluice itself sends, appended to a caller's buffer (no allocation of their own).

use bytes::{BufMut, BytesMut};

use super::startup::PROTOCOL_3_0;

/// Starts a tagged message and returns the offset of its length word, for `finish`.
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, key: i32) {
    buf.put_i32(16);
    buf.put_u32(super::startup::CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(key);
}

/// SSLRequest: asks the server to switch to TLS before the StartupMessage.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_u32(super::startup::SSL_REQUEST_CODE);
}

/// AuthenticationOk, CleartextPassword, MD5Password (with salt), SASL, SASLContinue, SASLFinal.
pub fn auth_ok(buf: &mut BytesMut) {
    auth(buf, 0, &[]);
}

pub fn auth_cleartext(buf: &mut BytesMut) {
    auth(buf, 3, &[]);
}

/// AuthenticationMD5Password, on the stack: every md5 login sends it, and a `BytesMut` grown
/// from empty for its 13 bytes was an allocation and a reserve per login.
pub fn auth_md5(salt: [u8; 4]) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[0] = b'R';
    out[1..5].copy_from_slice(&12i32.to_be_bytes());
    out[5..9].copy_from_slice(&5i32.to_be_bytes());
    out[9..].copy_from_slice(&salt);
    out
}

pub fn auth_sasl(buf: &mut BytesMut, mechanism: &str) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    put_cstr(buf, mechanism.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 11, data);
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 12, data);
}

fn auth(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(key);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// ErrorResponse (or NoticeResponse with `tag` b'N') with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    notice_or_error(buf, b'E', severity, code, message);
}

pub fn notice_response(buf: &mut BytesMut, code: &str, message: &str) {
    notice_or_error(buf, b'N', "NOTICE", code, message);
}

fn notice_or_error(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, message: &str) {
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, tag: &[u8]) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag);
    finish(buf, at);
}

pub fn parse_complete(buf: &mut BytesMut) {
    empty(buf, b'1');
}

pub fn close_complete(buf: &mut BytesMut) {
    empty(buf, b'3');
}

fn empty(buf: &mut BytesMut, tag: u8) {
    buf.put_u8(tag);
    buf.put_i32(4);
}

/// Frontend messages sluice sends to servers.
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    let at = begin(buf, b'p');
    put_cstr(buf, password);
    finish(buf, at);
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, b'p');
    put_cstr(buf, mechanism.as_bytes());
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(data);
    finish(buf, at);
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

pub fn terminate(buf: &mut BytesMut) {
    empty(buf, b'X');
}

pub fn sync(buf: &mut BytesMut) {
    empty(buf, b'S');
}

/// Parse with a statement name and the body of the client's Parse after its own name
/// (query text, parameter type count and types), so a remapped Parse copies no query.
pub fn parse_renamed(buf: &mut BytesMut, name: &[u8], rest: &[u8]) {
    let at = begin(buf, b'P');
    put_cstr(buf, name);
    buf.put_slice(rest);
    finish(buf, at);
}

/// Bind, Describe or Close whose statement name is replaced: `head` is what precedes the
/// name in the body (portal name for Bind, the kind byte for Describe/Close), `rest` what follows.
pub fn renamed(buf: &mut BytesMut, tag: u8, head: &[u8], name: &[u8], rest: &[u8]) {
    let at = begin(buf, tag);
    buf.put_slice(head);
    put_cstr(buf, name);
    buf.put_slice(rest);
    finish(buf, at);
}

pub fn close_statement(buf: &mut BytesMut, name: &[u8]) {
    renamed(buf, b'C', b"S", name, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_md5_challenge_on_the_stack_is_the_framed_message() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let mut framed = BytesMut::new();
        auth(&mut framed, 5, &salt);
        assert_eq!(auth_md5(salt)[..], framed[..]);
    }
}
