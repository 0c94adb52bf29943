"""The granularity playground: a small web page on the backend to try clicks and granularity.

``GET /playground`` serves a static page (plain HTML, JavaScript and CSS, no build step). A
person opens an image (upload, a file of the configured folder, or a Label Studio task), clicks
positive and negative points, and drags a granularity slider: each click asks the server for the
whole granularity sweep in one batched decoder call, so the slider redraws with no request.
"""
