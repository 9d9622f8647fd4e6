/**
 * Baseline for the domain-creation benchmark (test/bench/toolstack.ts): what a
 * bare thread costs. Loaded through hypervisor/platform/boot-worker.mjs as a
 * vCPU thread is, it imports the same guest module and posts the time it got
 * there (process.hrtime, ns), without any hypervisor or toolstack work.
 */
import { parentPort } from 'node:worker_threads';
import kernel from './first-instruction.ts';

parentPort?.postMessage({ t: process.hrtime.bigint(), loaded: typeof kernel === 'function' });
