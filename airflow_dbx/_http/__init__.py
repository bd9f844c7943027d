"""HTTP for the hook: connection settings, the request exchange (written once, as a plan of
effects), the retry policy, the aiohttp session pool, and the requests and aiohttp drivers."""
