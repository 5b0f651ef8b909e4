'use strict';
// vxevents: real-time event broadcasting for Node.js with a C core.

const { eventsPlugin, getEventsFromInstance, createManager } = require('./plugin.cjs');
const { EventsManager } = require('./manager.cjs');
const { normalizeOptions } = require('./options.cjs');
const native = require('./native.cjs');

let shared = null;

/**
 * The process-wide manager for jobs and scripts (created on first call; later calls return
 * the same one and ignore their options). Without `listen` it is a local instance.
 */
async function getEvents(options) {
  if (shared === null) {
    const o = normalizeOptions(options);
    shared = createManager(o).manager;
  }
  return shared;
}

/** Close the manager made by getEvents() (no-op when there is none). */
async function closeEvents() {
  const m = shared;
  shared = null;
  if (m) await m.close();
}

module.exports = {
  eventsPlugin,
  getEvents,
  closeEvents,
  getEventsFromInstance,
  EventsManager,
  version: native.version,
  default: eventsPlugin,
};
