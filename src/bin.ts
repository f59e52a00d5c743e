#!/usr/bin/env node
import { start } from './cli/start.js';

start(process.argv.slice(2));
