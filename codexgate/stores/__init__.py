"""Counter stores for budgets and rate limits: embedded (one instance) and Redis (several)."""
