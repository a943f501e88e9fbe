//! The lifecycle as the orphan cleanup's [`TunnelControl`]: a fresh read of one unit, and
//! deleting a tunnel.

use std::sync::Arc;

use super::{Lifecycle, LifecycleError};
use crate::domain::{TunnelId, UnitStatus};
use crate::health::TunnelControl;

impl Lifecycle {
    /// Reads unit `xray-tunnel-{id}.service` from systemd now (its Unit and Service
    /// properties: `LoadState`, `ActiveState`, `ExecStart`, ...), not from any snapshot. A unit
    /// without a file reads as `LoadState` "not-found" with an empty ExecStart. Takes no
    /// operation lock: it changes nothing.
    pub async fn read_unit(&self, id: &TunnelId) -> Result<UnitStatus, LifecycleError> {
        Ok(self.client.unit_status(&id.unit_name()).await?)
    }
}

impl TunnelControl for Lifecycle {
    type Error = LifecycleError;

    async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), LifecycleError> {
        self.delete(id).await.map(drop)
    }

    async fn read_unit(&self, id: &TunnelId) -> Result<UnitStatus, LifecycleError> {
        Lifecycle::read_unit(self, id).await
    }
}

impl TunnelControl for &Lifecycle {
    type Error = LifecycleError;

    async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), LifecycleError> {
        self.delete(id).await.map(drop)
    }

    async fn read_unit(&self, id: &TunnelId) -> Result<UnitStatus, LifecycleError> {
        Lifecycle::read_unit(self, id).await
    }
}

impl TunnelControl for Arc<Lifecycle> {
    type Error = LifecycleError;

    async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), LifecycleError> {
        self.delete(id).await.map(drop)
    }

    async fn read_unit(&self, id: &TunnelId) -> Result<UnitStatus, LifecycleError> {
        Lifecycle::read_unit(self, id).await
    }
}
