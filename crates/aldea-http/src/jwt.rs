//! The short-lived browser tokens (compact HS256 JWTs): the gateway's `/v1/auth/grant` and the
//! platform's `listen-token` issue them with the shared `ALDEA_JWT_SECRET`, the gateway checks them.
//! Only HS256 is accepted (never `alg: none`); the signature is checked before the claims are read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The claims of a granted token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// The key it was granted for.
    pub sub: String,
    pub org: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
}

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs `claims` as a compact HS256 JWT.
pub fn issue_jwt(claims: &JwtClaims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(JWT_HEADER);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(signing_input.as_bytes(), secret));
    format!("{signing_input}.{signature}")
}

fn sign(input: &[u8], secret: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// Checks the signature (HS256 only: the header must say so), then the expiry at `now`.
pub fn decode_jwt(token: &str, secret: &[u8], now: i64) -> Result<JwtClaims, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| "malformed token")?;
    let header_value: serde_json::Value = serde_json::from_slice(&header_json).map_err(|_| "malformed token")?;
    if header_value.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err("unsupported token algorithm");
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "malformed token")?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| "bad secret")?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).map_err(|_| "bad token signature")?;
    let claims: JwtClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| "malformed token")?)
        .map_err(|_| "malformed token claims")?;
    if claims.exp <= now {
        return Err("token expired");
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_and_rejections() {
        let claims = JwtClaims {
            sub: "k1".into(),
            org: "o1".into(),
            scope: "listen".into(),
            iat: 100,
            exp: 130,
            max_streams: Some(2),
            rpm: None,
        };
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = issue_jwt(&claims, secret);
        assert_eq!(decode_jwt(&token, secret, 129), Ok(claims.clone()));
        assert_eq!(decode_jwt(&token, secret, 130), Err("token expired"));
        assert_eq!(decode_jwt(&token, b"another secret, also long enough", 100), Err("bad token signature"));
        // A payload changed after signing fails the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"k1","org":"o2","scope":"listen","iat":100,"exp":999}"#);
        assert_eq!(decode_jwt(&parts.join("."), secret, 100), Err("bad token signature"));
        // `alg: none` is refused whatever the signature.
        parts[0] = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(decode_jwt(&parts.join("."), secret, 100), Err("unsupported token algorithm"));
        assert_eq!(decode_jwt("a.b", secret, 100), Err("malformed token"));
    }
}
