export { DockerClient, type DockerApi, type EngineVersion, type ImageInspect, type ImageStore } from './client.js';
export { DockerRuntime, checkContainerdStoreImage } from './runtime.js';
