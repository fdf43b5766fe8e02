# Conveniences over the scripts in scripts/, which are the real commands (and what CI runs).
# Extra pytest arguments: make test ARGS="-k merge -x"

.PHONY: test demo bench lint services services-stop services-env

test:
	bash scripts/test.sh $(ARGS)

demo:
	bash scripts/demo.sh $(ARGS)

bench:
	bash scripts/bench.sh $(ARGS)

lint:
	bash scripts/lint.sh

# Start PostgreSQL 15 and moto S3 and keep them running; then: eval "$$(scripts/services.sh env)"
services:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

services-env:
	@bash scripts/services.sh env
