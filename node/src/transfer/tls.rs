//! TLS for the data plane: libp2p's certificates (a self-signed certificate
//! carrying the node key's signature, so a connection is bound to a peer id)
//! and libp2p's certificate checks, with AES-GCM preferred.
//!
//! The certificates and their keys come from `libp2p_tls::make_client_config`
//! and `make_server_config` (their certificate resolvers), and every
//! certificate a peer presents goes through `libp2p_tls::certificate::parse`
//! and `P2pCertificate::verify_signature`, exactly as libp2p's own verifier
//! does. What differs is the cipher suite order: libp2p's configs prefer
//! ChaCha20-Poly1305, which on CPUs with AES instructions costs several times
//! more per byte than AES-128-GCM, and the data plane moves bulk bytes.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use weft_protocol::transfer::ALPN;

use super::TransferError;

fn tls_err(e: impl std::fmt::Display) -> TransferError {
    TransferError::Tls(e.to_string())
}

/// aws-lc-rs with TLS 1.3 suites in the data plane's order.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// A client config presenting this node's certificate and accepting only
/// `peer`'s.
pub(super) fn client(
    keypair: &Keypair,
    peer: PeerId,
) -> Result<rustls::ClientConfig, TransferError> {
    let base = libp2p_tls::make_client_config(keypair, Some(peer)).map_err(tls_err)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCertVerifier {
            expected: Some(peer),
        }))
        .with_client_cert_resolver(base.client_auth_cert_resolver.clone());
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A server config presenting this node's certificate and requiring one
/// from every client.
pub(super) fn server(keypair: &Keypair) -> Result<rustls::ServerConfig, TransferError> {
    let base = libp2p_tls::make_server_config(keypair).map_err(tls_err)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(PeerCertVerifier { expected: None }))
        .with_cert_resolver(base.cert_resolver.clone());
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Checks a presented certificate the way libp2p does: exactly one,
/// self-signed, carrying a valid signature of the peer's identity key; for
/// a client, of the peer it meant to reach.
#[derive(Debug)]
struct PeerCertVerifier {
    expected: Option<PeerId>,
}

fn schemes() -> Vec<SignatureScheme> {
    vec![
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA512,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ]
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn presented_peer(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<PeerId, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "a weft node presents exactly one certificate".into(),
        ));
    }
    let cert = libp2p_tls::certificate::parse(end_entity).map_err(invalid)?;
    Ok(cert.peer_id())
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    libp2p_tls::certificate::parse(cert)
        .map_err(invalid)?
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(invalid)?;
    Ok(HandshakeSignatureValid::assertion())
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = presented_peer(end_entity, intermediates)?;
        if self.expected.is_some_and(|e| e != peer) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

impl ClientCertVerifier for PeerCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        presented_peer(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}
