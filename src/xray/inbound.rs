//! The check made before the first add to an inbound: which proxy serves it, asked of the core
//! itself, since an account of the wrong kind crashes it (facts P1).

use super::client::ApiClient;
use super::error::{ApiError, Failure};
use super::proto;
use super::ss2022;
use super::wire::{self, Method, ProbeVerdict, Served};
use crate::domain::Protocol;

impl ApiClient {
    /// Which proxy serves the inbound `tag`, or [`ApiError::Refused`] unless it takes the
    /// accounts built for `protocol`. Asked once per (tag, protocol) and remembered.
    pub(super) async fn check_inbound(
        &self,
        tag: &str,
        protocol: &Protocol,
    ) -> Result<Served, ApiError> {
        let key = (tag.to_owned(), protocol.as_str().to_owned());
        let known = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        if let Some(served) = known {
            return Ok(served);
        }
        let served = self.probe_inbound(tag, protocol).await?;
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, served);
        Ok(served)
    }

    /// Removing the empty email changes nothing and the core's refusal names the proxy
    /// (facts §6, semantics "Exact texts").
    async fn probe_inbound(&self, tag: &str, protocol: &Protocol) -> Result<Served, ApiError> {
        let path = Method::AlterInbound.path(self.flavour);
        let probe = wire::inbound_probe(self.flavour, tag);
        let refused = |why: String| ApiError::Refused(format!("inbound {tag:?}: {why}"));
        let proxy = match self
            .call::<_, proto::AlterInboundResponse>(path, probe)
            .await
        {
            Err(Failure::EmptyEmail { proxy, .. }) => proxy,
            Err(Failure::NotUserManager(message)) => {
                return Err(refused(format!("takes no users ({message})")));
            }
            Err(failure) => return Err(failure.into()),
            Ok(_) => {
                let why = "the core accepted an empty email; cannot tell its protocol";
                return Err(refused(why.into()));
            }
        };
        match wire::probe_verdict(&proxy, protocol) {
            ProbeVerdict::Served(served) => Ok(served),
            ProbeVerdict::Refused(why) => Err(refused(why)),
            ProbeVerdict::NeedsMethod => {
                let key_bytes = self.ss2022_key_bytes(tag).await.map_err(|e| match e {
                    ApiError::Refused(why) => refused(why),
                    other => other,
                })?;
                Ok(Served::Shadowsocks2022 { key_bytes })
            }
        }
    }

    /// The user key length of the Shadowsocks-2022 inbound `tag`, from its method as
    /// ListInbounds shows it (Xray >= v25.6.7; refused on an older core, which cannot say).
    async fn ss2022_key_bytes(&self, tag: &str) -> Result<usize, ApiError> {
        let path = Method::ListInbounds.path(self.flavour);
        let request = proto::ListInboundsRequest {
            is_only_tags: false,
        };
        match self.call(path, request).await {
            Ok(answer) => ss2022::inbound_key_bytes(self.flavour, tag, answer),
            Err(Failure::UnknownMethod(message) | Failure::UnknownService(message)) => {
                Err(ApiError::Refused(format!(
                    "cannot read the Shadowsocks-2022 method to check the key length \
                     (ListInbounds needs Xray v25.6.7 or later: {message})"
                )))
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// Whether the inbound `tag` holds a user `email` in any letter case (the core looks it up
    /// case-insensitively; for a missing email it answers one empty user).
    pub(super) async fn holds(&self, tag: &str, email: &str) -> Result<bool, ApiError> {
        let path = Method::GetInboundUsers.path(self.flavour);
        let request = proto::GetInboundUserRequest {
            tag: tag.to_owned(),
            email: email.to_owned(),
        };
        let answer: proto::GetInboundUserResponse = self.call(path, request).await?;
        Ok(answer.users.iter().any(|user| !user.email.is_empty()))
    }
}
