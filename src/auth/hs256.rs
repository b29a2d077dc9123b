//! The one signature algorithm oddsbus accepts, HS256, as jsonwebtoken's crypto provider.
//!
//! jsonwebtoken's own `rust_crypto` provider brings every algorithm it knows (RSA, ECDSA,
//! EdDSA): some thirty crates that a broker checking HMAC tokens never calls. This provider
//! verifies HS256 with RustCrypto's `hmac` and `sha2` and refuses everything else.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Sha256;

/// Verifies HS256 only; signs nothing (the broker never issues tokens).
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] the process's provider; later calls change nothing.
pub fn install() {
    // Err means a provider is installed already: this one, by an earlier call.
    let _ = PROVIDER.install_default();
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let mac = Hmac::<Sha256>::new_from_slice(key.try_get_as_bytes()?)
        .map_err(|_| ErrorKind::InvalidKeyFormat)?;
    Ok(Box::new(Hs256(mac)))
}

struct Hs256(Hmac<Sha256>);

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.verify_slice(tag).map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}
