//! The simulated cluster's PKI: a throwaway CA and a serving certificate signed by it,
//! generated at every start, as a real cluster's CA would sign its apiserver's certificate.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA a client must trust and the TLS configuration the server serves with.
pub(crate) struct Pki {
    /// PEM of the CA certificate, as written to the kubeconfig's `certificate-authority-data`.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates a CA and a serving certificate valid for the loopback names and addresses.
pub(crate) fn generate() -> anyhow::Result<Pki> {
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "kube-sim-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "kubernetes".to_owned(), "kubernetes.default".to_owned()])?;
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    params.subject_alt_names.push(SanType::IpAddress("::1".parse()?));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server_config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key_der)?;
    // HTTP/1.1 only: every client (kube-rs, kubectl) falls back to it, and it keeps
    // watch streams and dropped-connection faults simple to reason about.
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki { ca_pem: ca.pem(), server_config: Arc::new(server_config) })
}
