.PHONY: test test-all demo lint

test:
	python3 dev.py test

test-all:
	python3 dev.py test --all

demo:
	python3 dev.py demo

lint:
	python3 dev.py lint
