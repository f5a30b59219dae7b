//! Throwaway certificate authorities and server certificates, made with rcgen (ring).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority: its PEM certificate and what signs with it.
pub(crate) struct Authority {
    pub(crate) cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new self-signed authority named `name`.
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert_pem = params.self_signed(&key).unwrap().pem();
        Self { cert_pem, issuer: Issuer::new(params, key) }
    }

    /// Writes the authority's certificate to `dir/file` and returns the path.
    pub(crate) fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }

    /// A server certificate for the given DNS names and IP addresses: (certificate, key), PEM.
    pub(crate) fn issue(&self, dns_names: &[&str], ips: &[Ipv4Addr]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "ldsync test server");
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| SanType::DnsName((*name).try_into().unwrap()))
            .chain(ips.iter().map(|ip| SanType::IpAddress(IpAddr::V4(*ip))))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
