export { chainIds, formatPlatform, platformOfMachine, type ExpectedImage, type Fetched, type ImageName, type ImportedRootfs, type LayerStream, type LoadFormat, type LoadPlan, type Platform, type Removal, type Runtime, type RuntimeKind, type StoredLayer, type VerifiedBlob, type VerifiedImage, type VerifiedLoad } from './types.js';
export { DockerClient, DockerRuntime, checkContainerdStoreImage, type DockerApi, type EngineVersion, type ImageInspect, type ImageStore } from './docker/index.js';
export { ContainerdRuntime, parsePlatform, type CtrOptions } from './containerd/index.js';
export { PodmanRuntime } from './podman/index.js';
