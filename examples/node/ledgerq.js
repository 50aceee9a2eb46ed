// Loads the ledgerq package from this repository (clients/node); in a project of your own,
// `npm install` it and require('ledgerq') instead.
'use strict';
try {
  module.exports = require('../../clients/node');
} catch (e) {
  if (e.code !== 'MODULE_NOT_FOUND') throw e;
  console.error('ledgerq: build the package first: cd clients/node && npm ci && npm run build');
  process.exit(2);
}
