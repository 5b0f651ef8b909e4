// Type declarations of the ES module entry (lib/index.mjs). Every type and named export is
// index.d.ts's (one source for both entries); only the default export is declared here,
// because an ES module's default is eventsPlugin itself while a CommonJS module's default,
// seen from ESM, would be its whole exports object.
import { eventsPlugin } from './index.js';

export * from './index.js';
export default eventsPlugin;
