# The billing service on Node 24: compiled JavaScript and production dependencies only.
# Build: docker build -t billing .
# Run:   docker run -e DATABASE_URL=postgres://... -e BILLING_TOKENS=... -p 8080:8080 billing
# (README, "Container"; test/container/image.test.ts runs these very steps without Docker.)
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: tsc needs none (they fetch buf, the Node 24 binary, anvil for tests).
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run build

FROM node:24-bookworm-slim
ENV NODE_ENV=production PORT=8080 METRICS_PORT=9464 BILLING_DATA_DIR=/data HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 8080 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["node", "dist/src/cli/healthcheck.js"]
# The same V8 heap settings as `npm start` (README, "Memory").
CMD ["node", "--max-old-space-size=1024", "--max-semi-space-size=8", "dist/src/main.js"]
