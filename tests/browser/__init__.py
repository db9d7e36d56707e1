# Makes tests/browser a package, so its conftest.py does not clash with
# tests/conftest.py (both would be imported as "conftest" otherwise; pytest
# imports every conftest.py as a module when --doctest-modules is on).
