#!/usr/bin/env node
// `xl`: reserved for the toolstack CLI, which talks to a running host over its
// control socket. Until it lands, say so plainly and fail.
console.error('xl: the xl command line is not available yet in this version of xents (see docs/getting-started.md)');
process.exit(1);
