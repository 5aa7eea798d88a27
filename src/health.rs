//! Health pings: `ssm:UpdateInstanceInformation` at start and every `Ssm.HealthFrequencyMinutes`.
//! STUB: implementation in progress.
