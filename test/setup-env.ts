/**
 * Each test worker process gets its own directory for the sockets and logs of
 * the hosts its tests boot, so hosts booted by tests running in parallel (and a
 * developer's own `npm start` host) never share a xenstored or control socket.
 */
import os from 'node:os';
import path from 'node:path';

const dir = path.join(os.tmpdir(), `xents-test-${process.pid}`);
process.env.XENTS_CONTROL_PATH ??= path.join(dir, 'control.sock');
process.env.XENSTORED_PATH ??= path.join(dir, 'xenstored', 'socket');
process.env.XENTS_LOG_DIR ??= path.join(dir, 'log');
