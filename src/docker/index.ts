export { DockerClient, chainIds, type DockerApi, type ImageStore } from './client.js';
