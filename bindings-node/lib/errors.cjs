'use strict';
// Option and argument errors raised by the JS layer. Errors from the core are plain
// `Error`s whose `.code` is the core's code name (EINVAL, ECHANNEL, ECLOSED, ...).

function optionError(message, code = 'EINVAL') {
  const err = new TypeError(`vxevents: ${message}`);
  err.code = code;
  return err;
}

function notSupported(what) {
  const err = new Error(`vxevents: ${what} is not supported yet`);
  err.code = 'ENOTSUP';
  return err;
}

module.exports = { optionError, notSupported };
