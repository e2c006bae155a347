/**
 * efa-emu: an emulated AWS Elastic Fabric Adapter for development and testing.
 *
 * One import gives the verbs API (named as libibverbs, in camelCase), the constants and
 * statuses with EFA's numbers, the typed errors, and the control-plane pieces.
 *
 * @packageDocumentation
 */
export { openDevice, EfaDevice, type OpenDeviceOptions } from './open-device';
export { CompletionPoller, type PollMode, type CompletionHandler } from './completion-poller';
export { Device, type DeviceOptions, type CqInit, type QpInit, type QpInfo, type AsyncEvent, type PacketTransport, type GidResolver, type ResolvedGid } from './device/device';
export { DEFAULT_ATTRIBUTES, type DeviceAttributes } from './device/attributes';
export { EfadvDeviceCaps, GENERATIONS, GENERATION_NAMES, DEFAULT_GENERATION, generationProfile, capNames, type GenerationName, type GenerationProfile } from './device/generations';
export { PortState, IbvMtu, type PortAttributes, type EfadvDeviceAttributes, type DeviceAttributesEx } from './device/queries';
export { AdminOpcode, AdminStatus, AdminCommandError, adminOpcodeName } from './device/admin';
export {
  QpType,
  QpState,
  QP_STATE_NAMES,
  WcStatus,
  wcStatusStr,
  wcStatusFromEfa,
  EfaStatus,
  efaStatusStr,
  WcOpcode,
  WcFlags,
  WrOpcode,
  SendFlags,
  AccessFlags,
  EfadvQpFlags,
  EfadvWcFlags,
  EFADV_QP_DRIVER_TYPE_SRD,
  QpSendOps,
  ENOENT,
  AH_UNKNOWN,
  GRH_LENGTH,
  PORT_NUM,
} from './device/constants';
export { WorkCompletion } from './device/work-completion';
export type { SendWr, RecvWr, Sge } from './device/work-requests';
export type { QpAttr } from './device/qp-state-machine';
export type { QpCap } from './device/queue-pair';
export { QueuePair } from './device/queue-pair';
export { CompletionQueue } from './device/completion-queue';
export { CompletionChannel } from './device/completion-channel';
export { ProtectionDomain } from './device/protection-domain';
export { MemoryRegion } from './device/memory-region';
export { AddressHandle } from './device/address-handle';
export { DeviceStats } from './device/device-stats';
export {
  EfaError,
  InvalidArgumentError,
  ResourceExhaustedError,
  PermissionDeniedError,
  NotSupportedError,
  ResourceBusyError,
  CqOverrunError,
  TimeoutError,
  ClosedError,
  DaemonError,
} from './common/errors';
export { formatGid, parseGid, makeGid, type Gid } from './common/gid';
export { readRankEnv, readDeviceHost, parseDeviceHost, ENV_HOST, ENV_PATHS, ENV_CC, type RankEnv } from './env';
export { startDaemon, DaemonServer, type DaemonOptions } from './control/server';
export { DaemonClient } from './control/client';
export { ManualClock } from './control/manual-clock';
export { realClock, type Clock } from './control/clock';
export { FaultInjector, type FaultInjectorOptions } from './io/fault-injector';
export { FaultSpecError, parseFaultSpec, formatFaultSpec, type FaultSpec } from './io/fault-spec';
export { DEFAULT_SRD_CONFIG, CC_MODES, type SrdConfig, type CcMode } from './srd/srd-config';
export { IngressBottleneck } from './io/ingress-bottleneck';
export { PathState } from './srd/path-set';
export { MAX_PATHS, packetPath } from './wire/header';
export { type HostPort } from './env';
export { RdmaUnit } from './device/rdma';
export type { Logger } from './common/logger';
export { RdmEndpoint, FI_MSG, FI_TAGGED, FI_RECV, FI_SEND, FI_REMOTE_CQ_DATA, type RdmEndpointOptions, type RdmTimer } from './rdm/rdm-endpoint';
export { RdmCq, RdmCqEntry, RdmCqErrEntry } from './rdm/rdm-cq';
export { AddressVector } from './rdm/address-vector';
export { DEFAULT_RDM_CONFIG, resolveRdmConfig, rdmConfigFromEnv, type RdmConfig, type RdmProgressMode } from './rdm/rdm-config';
export { FI_ADDR_UNSPEC, FI_ADDR_NOTAVAIL } from './rdm/rdm-peer';
export * from './rdm/fi-errno';
export { RdmPktType, RdmFeature, rdmPktTypeName, type RdmProtocol } from './rdm/rdm-wire';
export { encodeRawAddress, decodeRawAddress, formatRawAddress, type RawAddress } from './rdm/raw-address';
export { insertRanks } from './rdm/rank-addresses';
export { RdmStats } from './rdm/rdm-stats';

// The job layer: running ranks as the commands do, for library users' own jobs and tests.
export { launch, MAX_RANKS, EXIT_TIMEOUT, EXIT_SIGINT, EXIT_SIGTERM, RANK_MEMORY_ESTIMATE, type LaunchOptions, type LaunchResult, type RankResult } from './job/launch';
export { startEmbeddedDaemon, daemonForCommand, type EmbeddedDaemon, type RestartOutcome } from './job/embedded-daemon';
export { runJob, ENV_JOB_ID, type JobFlags, type JobLaunch } from './job/run-job';
export { captureEnv, mergeCapture } from './job/capture-merge';
export { TypeScriptError } from './job/ts-build';
export { runPingPong, parsePingPongArgs, printResult as printPingPongResult, CompletionFailedError, type PingPongOptions, type PingPongResult } from './job/pingpong/pingpong';
export { PINGPONG_RANK_PROGRAM, BENCH_RANK_PROGRAM, FI_RANK_PROGRAM } from './job/programs';
export { isRdmaTest, type BenchResult, type BenchTest } from './job/bench/bench-result';
export { runFailoverLab, formatFailover, plotFailover, FAILOVER_TARGETS, type FailoverOptions, type FailoverReport, type FailoverScenario } from './job/lab/lab-failover';
export { runIncastLab, formatIncast, plotIncast, INCAST_TARGETS, type IncastOptions, type IncastReport, type IncastScenario } from './job/lab/lab-incast';
export { LabError, FAILOVER_RANK_PROGRAM, INCAST_RANK_PROGRAM, DEFAULT_LAB_TIMEOUT_S, type LabRunOptions } from './job/lab/lab-run';
export { renderSvg, type PlotPanel, type PlotSeries, type PlotShade } from './job/lab/lab-plot';
