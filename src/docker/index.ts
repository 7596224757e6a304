export { DockerClient, chainIds, type ImageStore } from './client.js';
