# The billing service on Node 24. Build: docker build -t billing .
# Run on PostgreSQL: docker run -e DATABASE_URL=postgres://... -e BILLING_TOKENS=... -p 8080:8080 billing
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

FROM node:24-bookworm-slim
ENV NODE_ENV=production PORT=8080 METRICS_PORT=9464 BILLING_DATA_DIR=/data HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY --from=build /app/dist ./dist
COPY config ./config
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 8080 9464
# The same V8 heap settings as `npm start` (README, "Memory").
CMD ["node", "--max-old-space-size=1024", "--max-semi-space-size=8", "dist/src/main.js"]
