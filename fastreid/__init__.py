"""fastreid: patent drawing retrieval trained like person re-identification."""
__version__ = "0.1.0"
