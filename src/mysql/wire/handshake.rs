//! The connection phase: HandshakeV10 (greeting), HandshakeResponse41 and AuthSwitchRequest, read
//! and written for both sides (sluice greets clients and answers servers).

use super::caps;
use super::packet::{PacketWriter, Reader, WireError, put_lenenc_str};

/// HandshakeV10, the server's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub version: String,
    pub connection_id: u32,
    /// The 20-byte scramble salt.
    pub nonce: Vec<u8>,
    pub caps: u32,
    pub charset: u8,
    pub status: u16,
    pub plugin: String,
}

impl Greeting {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "HandshakeV10");
        if r.u8()? != 10 {
            return Err(WireError::Malformed("HandshakeV10"));
        }
        let version = String::from_utf8_lossy(r.cstr()?).into_owned();
        let connection_id = r.u32()?;
        let mut nonce = r.take(8)?.to_vec();
        r.u8()?;
        let mut caps = u32::from(r.u16()?);
        let charset = r.u8()?;
        let status = r.u16()?;
        caps |= u32::from(r.u16()?) << 16;
        let data_len = usize::from(r.u8()?);
        r.take(10)?;
        if caps & caps::SECURE_CONNECTION != 0 {
            let part2 = data_len.saturating_sub(8).max(13);
            let bytes = r.take(part2.min(payload.len()))?;
            // The last byte is a NUL terminator, not salt.
            nonce.extend_from_slice(bytes.strip_suffix(&[0]).unwrap_or(bytes));
        }
        let plugin = if caps & caps::PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(r.cstr_or_rest()).into_owned()
        } else {
            String::new()
        };
        Ok(Self {
            version,
            connection_id,
            nonce,
            caps,
            charset,
            status,
            plugin,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let w = PacketWriter::begin(out, 0);
        out.push(10);
        out.extend_from_slice(self.version.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&self.nonce[..8]);
        out.push(0);
        out.extend_from_slice(&(self.caps as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.caps >> 16) as u16).to_le_bytes());
        out.push((self.nonce.len() + 1) as u8);
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&self.nonce[8..]);
        out.push(0);
        out.extend_from_slice(self.plugin.as_bytes());
        out.push(0);
        w.finish(out);
    }
}

/// HandshakeResponse41 (or the 32-byte SSLRequest prefix of one, `ssl_request`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    pub caps: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
    /// Raw CONNECT_ATTRS key/value block (without its length prefix).
    pub attrs: Vec<u8>,
    pub ssl_request: bool,
}

impl HandshakeResponse {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "HandshakeResponse41");
        let caps = r.u32()?;
        if caps & caps::PROTOCOL_41 == 0 {
            return Err(WireError::Malformed("HandshakeResponse (pre-4.1 protocol)"));
        }
        let max_packet = r.u32()?;
        let charset = r.u8()?;
        r.take(23)?;
        let mut hr = Self {
            caps,
            max_packet,
            charset,
            ..Self::default()
        };
        if r.is_empty() {
            hr.ssl_request = true;
            return Ok(hr);
        }
        hr.user = String::from_utf8_lossy(r.cstr()?).into_owned();
        hr.auth = if caps & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
            r.lenenc_bytes()?.to_vec()
        } else if caps & caps::SECURE_CONNECTION != 0 {
            let n = usize::from(r.u8()?);
            r.take(n)?.to_vec()
        } else {
            r.cstr()?.to_vec()
        };
        if caps & caps::CONNECT_WITH_DB != 0 && !r.is_empty() {
            let db = r.cstr_or_rest();
            if !db.is_empty() {
                hr.database = Some(String::from_utf8_lossy(db).into_owned());
            }
        }
        if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            hr.plugin = Some(String::from_utf8_lossy(r.cstr_or_rest()).into_owned());
        }
        if caps & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            hr.attrs = r.lenenc_bytes()?.to_vec();
        }
        Ok(hr)
    }

    pub fn write(&self, out: &mut Vec<u8>, seq: u8) {
        let w = PacketWriter::begin(out, seq);
        out.extend_from_slice(&self.caps.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0; 23]);
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        put_lenenc_str(out, &self.auth);
        if let Some(db) = &self.database {
            out.extend_from_slice(db.as_bytes());
            out.push(0);
        }
        if let Some(plugin) = &self.plugin {
            out.extend_from_slice(plugin.as_bytes());
            out.push(0);
        }
        if self.caps & caps::CONNECT_ATTRS != 0 {
            put_lenenc_str(out, &self.attrs);
        }
        w.finish(out);
    }
}

/// AuthSwitchRequest: use `plugin` with `data` (the plugin's salt) instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch {
    pub plugin: String,
    pub data: Vec<u8>,
}

impl AuthSwitch {
    pub fn write(&self, out: &mut Vec<u8>, seq: u8) {
        let w = PacketWriter::begin(out, seq);
        out.push(0xfe);
        out.extend_from_slice(self.plugin.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.data);
        out.push(0);
        w.finish(out);
    }
}

pub fn parse_auth_switch(payload: &[u8]) -> Result<AuthSwitch, WireError> {
    let mut r = Reader::new(payload, "AuthSwitchRequest");
    if r.u8()? != 0xfe {
        return Err(WireError::Malformed("AuthSwitchRequest"));
    }
    let plugin = String::from_utf8_lossy(r.cstr_or_rest()).into_owned();
    let data = r.rest();
    Ok(AuthSwitch {
        plugin,
        data: data.strip_suffix(&[0]).unwrap_or(data).to_vec(),
    })
}

/// Client capability bits sluice may pass on to a server connection (the rest it sets itself).
/// LOCAL_FILES too: a connection that has it serves only clients that announced it, so a server
/// asks for a file only a client that can send one, and refuses everyone else itself.
pub const FORWARDED_CAPS: u32 = caps::FOUND_ROWS
    | caps::LOCAL_FILES
    | caps::IGNORE_SPACE
    | caps::MULTI_STATEMENTS
    | caps::MULTI_RESULTS
    | caps::PS_MULTI_RESULTS
    | caps::DEPRECATE_EOF
    | caps::INTERACTIVE
    | caps::ODBC;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mysql::wire::next_packet;

    #[test]
    fn greeting_and_response_round_trip() {
        let g = Greeting {
            version: "5.5.5-10.11.19-MariaDB".into(),
            connection_id: 42,
            nonce: (1..=20).collect(),
            caps: caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH,
            charset: 45,
            status: 2,
            plugin: "mysql_native_password".into(),
        };
        let mut out = Vec::new();
        g.write(&mut out);
        let p = next_packet(&out).unwrap();
        assert_eq!(Greeting::parse(&out[4..p.len]).unwrap(), g);

        let hr = HandshakeResponse {
            caps: caps::PROTOCOL_41
                | caps::SECURE_CONNECTION
                | caps::PLUGIN_AUTH
                | caps::PLUGIN_AUTH_LENENC_DATA
                | caps::CONNECT_WITH_DB
                | caps::CONNECT_ATTRS,
            max_packet: 1 << 24,
            charset: 45,
            user: "app".into(),
            auth: vec![7; 20],
            database: Some("appdb".into()),
            plugin: Some("mysql_native_password".into()),
            attrs: b"\x04_pid\x0212".to_vec(),
            ssl_request: false,
        };
        out.clear();
        hr.write(&mut out, 1);
        assert_eq!(HandshakeResponse::parse(&out[4..]).unwrap(), hr);
        // Truncated anywhere: an error, never a panic.
        for cut in 5..out.len() - 1 {
            let _ = HandshakeResponse::parse(&out[4..cut]);
        }
        let sw = AuthSwitch {
            plugin: "caching_sha2_password".into(),
            data: vec![9; 20],
        };
        out.clear();
        sw.write(&mut out, 2);
        assert_eq!(parse_auth_switch(&out[4..]).unwrap(), sw);
    }
}
